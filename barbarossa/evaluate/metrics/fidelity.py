"""Language fidelity: the share of generations in the run's language, as a local `evaluate` module.

`identify` is the language pack's [identify] table (barbarossa/languages.py):
the pack's language, its confusable neighbours and how to tell them apart
(see barbarossa/evaluate/langid.py). Empty answers count as not in the language.
"""

import datasets
import evaluate

from barbarossa.evaluate import langid


class Fidelity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions identified as the language pack's language (vs its neighbours).",
            citation="lingua-language-detector (Peter M. Stahl); character n-gram naive Bayes for languages it lacks",
            inputs_description="predictions: list of generated strings; identify: a language pack's [identify] table. "
            "Returns {'score': 0..1, 'languages': {...}, 'segments': 1 per prediction in the "
            "language, else 0}.",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, identify):
        target = langid.target_code(identify)
        found = [langid.language_of(p, identify) for p in predictions]
        counts = {code: found.count(code) for code in sorted(set(found))}
        return {
            "score": found.count(target) / max(len(found), 1),
            "languages": counts,
            "segments": [int(code == target) for code in found],
        }
