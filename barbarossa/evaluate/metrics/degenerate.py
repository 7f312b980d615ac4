"""Degenerate output rate as a local `evaluate` module: empty answers and looping repetition.

Small or over-trained models fall into loops ("səviyyəsində səviyyəsində ...").
An answer is degenerate when it is empty, or when it has at least 8 words and
fewer than half of its word 3-grams are distinct, or when one word fills more
than half of an answer of 6+ words.
"""

import datasets
import evaluate


def is_degenerate(text: str) -> bool:
    words = text.lower().split()
    if not words:
        return True
    if len(words) >= 6 and max(words.count(w) for w in set(words)) > len(words) / 2:
        return True
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(words) >= 8 and len(set(grams)) < len(grams) / 2


class Degenerate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions that are empty or loop (see module docstring).",
            citation="",
            inputs_description="predictions: list of generated strings. Returns {'score': 0..1, 'segments': 1 per "
            "degenerate prediction, else 0}.",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions):
        flags = [int(is_degenerate(p)) for p in predictions]
        return {"score": sum(flags) / max(len(flags), 1), "segments": flags}
