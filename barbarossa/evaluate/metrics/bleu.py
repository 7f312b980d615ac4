"""Corpus BLEU as a local `evaluate` module (sacrebleu; the hub script is unreachable offline)."""

import datasets
import evaluate
from sacrebleu.metrics import BLEU


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus-level BLEU (sacrebleu defaults: 13a tokenisation, exponential smoothing).",
            citation="Papineni et al., BLEU (ACL 2002); Post, A Call for Clarity in Reporting BLEU Scores (WMT 2018)",
            inputs_description="predictions: list of strings; references: one reference string per prediction. Returns "
            "{'score': 0..100, 'segments': [hyp_len, ref_len, correct×4, total×4] per prediction}.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        """The corpus score and the per-segment statistics it sums (what a bootstrap resamples)."""
        metric = BLEU()
        segments = metric._extract_corpus_statistics(predictions, [references])
        return {"score": metric._aggregate_and_compute(segments).score, "segments": segments}
