"""ROUGE-L F1 on Unicode words, and a pool that finds a new task's most similar earlier one fast.

`rouge-score` keeps only ASCII letters and digits: "Azərbaycanın paytaxtı" becomes `az rbaycan n paytaxt`, and
two unrelated Azerbaijani sentences share enough such fragments to score about 0.2. Here a word is a run of
Unicode letters and digits, casefolded (the dotted and dotless i of Turkic scripts folded to one `i`), so on
English text the words, and the scores, are rouge-score's, and on other scripts they are words.

Self-instruct compares every new instruction with the seeds and every instruction kept before it: 52K tasks make
some 10^9 pairs. The pool skips most of them exactly: ROUGE-L F1 is 2·LCS/(m+n), and the LCS of two token lists is
at most their multiset overlap, which an inverted index counts for the whole pool at once (numpy). Only pairs whose
bound passes the threshold get an LCS, best bound first, stopping once no bound left can beat the best found. The
LCS itself is bit-parallel (one big-integer step per token), on integer token ids.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; no underscore (rouge-score splits there too)
_TURKIC_I = str.maketrans({"İ": "i", "I": "i", "ı": "i"})  # casefold would give İ → i + combining dot


def fold(text: str) -> str:
    """Text as compared: NFC, Turkic i's folded to `i`, casefolded (ŞƏKİL, şəkil and şəkıl compare equal)."""
    return unicodedata.normalize("NFC", text).translate(_TURKIC_I).casefold()


def words(text: str) -> list[str]:
    """The words ROUGE-L counts: runs of Unicode letters and digits of the folded text."""
    return _WORD.findall(fold(text))


def f1(common: int, m: int, n: int) -> float:
    """ROUGE-L F1 of two texts of m and n words with `common` words in their LCS (also the bound's formula)."""
    return 2 * common / (m + n) if common else 0.0


def position_masks(tokens: Sequence) -> dict:
    """Each token's positions in `tokens` as a bit mask: the bit-parallel LCS's table of the first sequence."""
    masks: dict = {}
    for position, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << position)
    return masks


def lcs_with_masks(masks: dict, m: int, other: Sequence) -> int:
    """LCS length of the m-token sequence `masks` describes and `other` (Crochemore et al.'s bit-vector recurrence:
    a zero bit of V marks a position that ends a longest common subsequence so far)."""
    full = (1 << m) - 1
    v = full
    for token in other:
        u = v & masks.get(token, 0)
        if u:
            v = ((v + u) | (v - u)) & full
    return m - v.bit_count()


def lcs_length(a: Sequence, b: Sequence) -> int:
    return lcs_with_masks(position_masks(a), len(a), b)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts (symmetric)."""
    first, second = words(a), words(b)
    return f1(lcs_length(first, second), len(first), len(second))


def naive_most_similar(tokens: Sequence, pool: Sequence[Sequence], threshold: float) -> tuple[float, int] | None:
    """(score, index) of the most similar pool entry if above `threshold`, scoring every pair: the reference the
    pool's bounds are tested and benchmarked against."""
    masks, best = position_masks(tokens), None
    for index, other in enumerate(pool):
        score = f1(lcs_with_masks(masks, len(tokens), other), len(tokens), len(other))
        if score > threshold and (best is None or score > best[0]):
            best = (score, index)
    return best


class SimilarityPool:
    """Token lists (instructions) that grows one entry at a time and answers `most_similar` without scoring every
    pair: an inverted index (token id → entries, counts) gives each entry's multiset overlap with the query."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.entries: list[array] = []  # each entry's token ids
        self.lengths = array("i")
        self.postings: list[tuple[array, array]] = []  # token id → (entries holding it, how often)

    def __len__(self) -> int:
        return len(self.entries)

    def encode(self, tokens: Sequence[str]) -> array:
        """Token ids; a token never seen gets a new id (it is in no entry yet)."""
        return array("i", (self.ids.setdefault(token, len(self.ids)) for token in tokens))

    def add(self, tokens: Sequence[str]) -> int:
        """Adds an entry; returns its index."""
        encoded, index = self.encode(tokens), len(self.entries)
        while len(self.postings) < len(self.ids):
            self.postings.append((array("i"), array("i")))
        for token, count in Counter(encoded).items():
            entries, counts = self.postings[token]
            entries.append(index)
            counts.append(count)
        self.entries.append(encoded)
        self.lengths.append(len(encoded))
        return index

    def bounds(self, encoded: array) -> np.ndarray:
        """Every entry's upper bound of ROUGE-L F1 with the query: 2·overlap/(m+n), overlap ≥ LCS."""
        rows, weights = [], []
        for token, count in Counter(encoded).items():
            if token < len(self.postings) and len(self.postings[token][0]):
                entries, counts = self.postings[token]
                rows.append(np.frombuffer(entries, dtype=np.int32))
                weights.append(np.minimum(np.frombuffer(counts, dtype=np.int32), count))
        if not rows:
            return np.zeros(len(self.entries))
        overlap = np.bincount(np.concatenate(rows), np.concatenate(weights), minlength=len(self.entries))
        return 2 * overlap / (len(encoded) + np.frombuffer(self.lengths, dtype=np.int32))

    def most_similar(self, tokens: Sequence[str], threshold: float) -> tuple[float, int] | None:
        """(score, index) of the most similar entry if its ROUGE-L F1 is above `threshold`, else None; the same
        answer as `naive_most_similar`, scoring only the entries whose bound could beat both."""
        if not tokens or not self.entries:
            return None
        encoded = self.encode(tokens)
        bounds = self.bounds(encoded)
        candidates = np.nonzero(bounds > threshold)[0]
        if not len(candidates):
            return None
        masks, m, best = position_masks(encoded), len(encoded), None
        for index in candidates[np.argsort(-bounds[candidates], kind="stable")].tolist():
            if best is not None and bounds[index] <= best[0]:
                break
            other = self.entries[index]
            score = f1(lcs_with_masks(masks, m, other), m, len(other))
            if score > threshold and (best is None or score > best[0]):
                best = (score, index)
        return best
