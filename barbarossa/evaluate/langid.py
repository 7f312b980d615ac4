"""Which language a text is in, as a language pack's [identify] table says to decide it.

A fine-tune can lower loss while answering in English or drifting into its
language's closest relative (Turkish for Azerbaijani, Russian for Kazakh).
`lingua` (a statistical identifier that ships its models) decides between the
pack's language and its confusable neighbours. For a language lingua has no
model of (Uzbek), `ngram` trains a character 1–3-gram naive Bayes identifier
on the bundled samples the pack names, one per language: small, but the
languages differ in their letters (oʻ, gʻ; ə; ş, ı) and it is measured in the tests.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import lru_cache

from barbarossa import languages

ORDERS = (1, 2, 3)


def target_code(identify: dict) -> str:
    """The code `language_of` returns for text in the pack's own language."""
    if identify["method"] == "lingua":
        from lingua import Language

        return getattr(Language, identify["target"].upper()).iso_code_639_1.name.lower()
    return identify["target"]


def language_of(text: str, identify: dict) -> str:
    """The most likely language of `text` among the pack's target and neighbours ('' for empty/undecidable text)."""
    if not text.strip():
        return ""
    if identify["method"] == "lingua":
        found = _lingua(identify["target"], tuple(identify["neighbours"])).detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else ""
    return _ngram(tuple(sorted(identify["texts"].items()))).identify(text)


@lru_cache(maxsize=8)
def _lingua(target: str, neighbours: tuple[str, ...]):
    from lingua import Language, LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_languages(
        *(getattr(Language, n.upper()) for n in (target, *neighbours))
    ).build()


def grams(text: str) -> Counter:
    """Character n-grams of the lower-cased text, words padded with a space on each side."""
    padded = " " + " ".join(text.lower().split()) + " "
    return Counter(padded[i : i + n] for n in ORDERS for i in range(len(padded) - n + 1))


class NgramIdentifier:
    """Naive Bayes over character n-grams with add-one smoothing, one model per language."""

    def __init__(self, texts: dict[str, list[str]]):
        self.counts = {lang: sum((grams(t) for t in rows), Counter()) for lang, rows in texts.items()}
        self.totals = {lang: sum(c.values()) for lang, c in self.counts.items()}
        self.vocabulary = len(set().union(*self.counts.values())) + 1

    def identify(self, text: str) -> str:
        seen = grams(text)

        def score(lang: str) -> float:
            counts, denominator = self.counts[lang], self.totals[lang] + self.vocabulary
            return sum(n * math.log((counts.get(g, 0) + 1) / denominator) for g, n in seen.items())

        return max(sorted(self.counts), key=score)


@lru_cache(maxsize=8)
def _ngram(files: tuple[tuple[str, str], ...]) -> NgramIdentifier:
    texts = {}
    for lang, file in files:
        rows = [
            json.loads(line)
            for line in languages.resolve(file).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        texts[lang] = [row[field] for row in rows for field in ("instruction", "input", "output") if row.get(field)]
    return NgramIdentifier(texts)
