"""chrF++ (character n-gram F-score with word bigrams) as a local `evaluate` module.

The hub copy of `evaluate`'s chrf script is unreachable offline; this module
wraps sacrebleu, the reference implementation, and loads by path.
"""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = "Corpus-level chrF++ (sacrebleu, word_order=2) of predictions against one reference each."
_KWARGS = """
predictions: list of generated strings.
references: list of reference strings (one per prediction).
word_order: 2 for chrF++ (default), 0 for plain chrF.
Returns {"score": float in 0..100, "segments": sacrebleu's [hyp, ref, match] counts per n-gram order, per prediction}.
"""


class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Popović, chrF++: words helping character n-grams (WMT 2017)",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, word_order: int = 2):
        """The corpus score and the per-segment statistics it sums (what a bootstrap resamples)."""
        metric = CHRF(word_order=word_order)
        segments = metric._extract_corpus_statistics(predictions, [references])
        return {"score": metric._aggregate_and_compute(segments).score, "segments": segments}
