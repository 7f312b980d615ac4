"""Azerbaijani fidelity: the share of generations that are Azerbaijani, as a local `evaluate` module.

A fine-tune can lower loss while answering in English or drifting into Turkish,
its closest relative. lingua (a statistical identifier that ships its models)
decides between Azerbaijani, Turkish, English and Russian — the languages an
Azerbaijani model most often slips into. Empty answers count as not Azerbaijani.
"""

import datasets
import evaluate
from lingua import Language, LanguageDetectorBuilder

CANDIDATES = (Language.AZERBAIJANI, Language.TURKISH, Language.ENGLISH, Language.RUSSIAN)
_DETECTOR = None


def detector():
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = LanguageDetectorBuilder.from_languages(*CANDIDATES).build()
    return _DETECTOR


def language_of(text: str) -> str:
    """ISO 639-1 code of the most likely language, or '' for empty/undecidable text."""
    if not text.strip():
        return ""
    found = detector().detect_language_of(text)
    return found.iso_code_639_1.name.lower() if found else ""


class AzFidelity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Share of predictions identified as Azerbaijani (vs Turkish, English, Russian).",
            citation="lingua-language-detector (Peter M. Stahl)",
            inputs_description="predictions: list of generated strings. Returns {'score': 0..1, 'languages': {...}, "
                               "'segments': 1 per Azerbaijani prediction, else 0}.",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions):
        found = [language_of(p) for p in predictions]
        counts = {code: found.count(code) for code in sorted(set(found))}
        return {"score": found.count("az") / max(len(found), 1), "languages": counts,
                "segments": [int(code == "az") for code in found]}
