"""Which language a text is in, as a language pack's [identify] table says to decide it.

A fine-tune can lower loss while answering in English or drifting into its
language's closest relative (Turkish for Azerbaijani, Russian for Kazakh).
`lingua` (a statistical identifier that ships its models) decides between the
pack's language and its confusable neighbours. For a language lingua has no
model of (Uzbek), `ngram` trains a character 1–3-gram naive Bayes identifier
on the bundled samples the pack names, one per language: small, but the
languages differ in their letters (oʻ, gʻ; ə; ş, ı) and it is measured in the tests.

Too short to tell: a text with fewer than MIN_WORDS words that carry a letter
(words as the pack's [words] pattern splits them; digits, signs and markup say
nothing of a language) is UNDETERMINED, not guessed. On a word or two both
identifiers guess, and confidently: the Uzbek n-gram model calls "No.",
"Paris." and "Good morning" Uzbek with score margins as wide as it gives real
Uzbek sentences, and lingua's confidence on "Bakı." is a coin toss between
Azerbaijani and Turkish. So the rule is the length, not the identifier's
confidence. It does not make the n-gram model sure of short English sentences
just above it ("Good morning to you all." still reads as Uzbek).
`judged_language` applies it (fidelity); the self-instruct language filter
uses `too_short` so both skip the same texts.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from functools import lru_cache

from barbarossa import languages

ORDERS = (1, 2, 3)
MIN_WORDS = 4  # fewer words with letters than this: too short to tell
UNDETERMINED = "undetermined"  # what `judged_language` says of a text too short to tell
WORDS = r"\S+"  # a pack's default [words] pattern


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


def letter_words(text: str, word_pattern: str = WORDS) -> int:
    """How many words (the pack's pattern) carry a letter: "24 × 15 = 360." has none, "Bakı." one."""
    return sum(any(ch.isalpha() for ch in word) for word in re.findall(word_pattern, text))


def too_short(text: str, word_pattern: str = WORDS) -> bool:
    """Whether `text` has too few words for any identifier here to tell its language (see the module's note)."""
    return letter_words(text, word_pattern) < MIN_WORDS


def judged_language(text: str, identify: dict, word_pattern: str = WORDS) -> str:
    """`language_of` where the text is long enough to tell, else UNDETERMINED (never a guess)."""
    return UNDETERMINED if too_short(text, word_pattern) else language_of(text, identify)


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
