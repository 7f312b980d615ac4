"""Language fidelity: the share of generations in the run's language, as a local `evaluate` module.

`identify` is the language pack's [identify] table (barbarossa/languages.py):
the pack's language, its confusable neighbours and how to tell them apart
(see barbarossa/evaluate/langid.py); `words` is the pack's [words] pattern.

An answer too short to tell its language (langid.too_short: fewer than 4 words
with letters; an empty answer too) is undetermined: it is left out of the
fidelity share, so a right one-word answer ("Bakı.") neither helps nor hurts and
a wrong one ("Paris.") is not guessed into the language, and it is counted
apart (`undetermined`). With no answer long enough to tell, the score is None.
"""

import datasets
import evaluate

from barbarossa.evaluate import langid


class Fidelity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions identified as the language pack's language (vs its neighbours), "
            "among those long enough to tell.",
            citation="lingua-language-detector (Peter M. Stahl); character n-gram naive Bayes for languages it lacks",
            inputs_description="predictions: list of generated strings; identify: a language pack's [identify] table; "
            "words: the pack's [words] pattern. Returns {'score': 0..1 or None, 'undetermined': 0..1, "
            "'languages': {...}, 'segments': 1 per prediction in the language, else 0, "
            "'undetermined_segments': 1 per prediction too short to tell, else 0}.",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, identify, words=langid.WORDS):
        target = langid.target_code(identify)
        found = [langid.judged_language(p, identify, words) for p in predictions]
        unknown = [int(code == langid.UNDETERMINED) for code in found]
        judged = len(found) - sum(unknown)
        return {
            "score": found.count(target) / judged if judged else None,
            "undetermined": sum(unknown) / max(len(found), 1),
            "languages": {code: found.count(code) for code in sorted(set(found))},
            "segments": [int(code == target) for code in found],
            "undetermined_segments": unknown,
        }
