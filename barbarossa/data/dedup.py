"""Near-duplicate decontamination: training rows that are near-copies of an eval prompt.

Comparing prompts exactly (`instructions.prompt_key`) misses a prompt that differs from
an eval prompt only in case, punctuation, a number or a reordered word; a model
trained on it is then tested on something it has seen. Here each prompt
(instruction + input) is normalised — casefolded, punctuation and symbols turned
into spaces, every run of digits into one placeholder `0`, whitespace collapsed —
cut into character 5-gram shingles, and compared by Jaccard similarity
|a ∩ b| / |a ∪ b| of the shingle sets. A training row whose similarity to any
eval prompt reaches the threshold is a near-duplicate: the training row goes,
the eval row stays. Masking numbers is deliberate: prompts that differ only in
their numbers count as near-copies (an arithmetic template with other numbers too).

Comparing 52K training rows with thousands of eval prompts pair by pair is too
slow, so candidates come from MinHash with LSH banding, all in numpy: every
shingle is hashed once (one-permutation hashing: the hash picks one of 64 bins
and the smallest value per bin is the signature), bins are grouped into bands,
and only rows that agree on a whole band are compared — exactly, on the real
shingle sets, so nothing below the threshold is ever removed. The band width
is chosen for the threshold so that a pair exactly at it is missed with
probability under 1/1000 (at 0.8: 16 bands of 4 bins), and more similar pairs
even less often. Every hash is fixed (no random seed, no salted `hash()`), so
the same data always gives the same result on every machine.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

SHINGLE = 5  # characters per shingle: long enough to carry words, short enough that an edit touches few
DEFAULT_THRESHOLD = 0.8
BINS = 64  # signature length
MISS = 1e-3  # the most a pair exactly at the threshold may be missed
CHUNK_ROWS = 20_000  # training rows hashed at a time: bounds memory at any data size
EXAMPLES = 5  # pairs kept for the data summary and card
SHOWN_CHARS = 160  # a prompt is cut to this in the examples

_ZEROS = re.compile(r"0{2,}")
_PAD = "\x01"  # pads a text shorter than one shingle (it is then its own single shingle)
_EMPTY = np.iinfo(np.uint64).max


class _Folding(dict):
    """`str.translate` table, filled as characters are met: punctuation, symbols and control
    characters → space, digits → '0', marks and format characters dropped, everything else kept."""

    def __missing__(self, code: int):
        category = unicodedata.category(chr(code))
        if category[0] in "PS" or category == "Cc":
            value = " "
        elif category == "Nd":
            value = "0"
        elif category[0] == "M" or category == "Cf":
            value = None
        else:
            value = code
        self[code] = value
        return value


_FOLDING = _Folding()


def normalise(text: str) -> str:
    """The prompt as compared: casefolded (NFC), no punctuation, numbers masked ('0'), single spaces."""
    text = text.casefold()
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)  # casefold may decompose (İ → i + dot; the dot is then dropped)
    text = text.translate(_FOLDING)
    if "00" in text:
        text = _ZEROS.sub("0", text)
    return " ".join(text.split())


def prompt_text(record: dict) -> str:
    """What the model is asked: instruction and input, one string."""
    return f"{record['instruction']}\n{record['input']}" if record["input"] else record["instruction"]


def shingles(text: str, size: int = SHINGLE) -> set[str]:
    """Character n-grams of normalised text; a text shorter than n is its own single shingle."""
    if len(text) <= size:
        return {text} if text else set()
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def jaccard(a: set, b: set) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def check_threshold(threshold) -> float:
    """0 switches decontamination off; (0, 1] is the Jaccard similarity from which a row counts as a near-copy."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"[eval] near_duplicate_threshold must be a number from 0 (off) to 1, got {threshold!r}")
    return float(threshold)


# --------------------------------------------------------------------------- signatures (numpy)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole 64-bit word."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _shingle_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every shingle, its row number), for normalised texts; an empty text has none."""
    padded = [t.ljust(SHINGLE, _PAD) if t else "" for t in texts]
    lengths = np.array([len(t) for t in padded], dtype=np.int64)
    counts = np.where(lengths > 0, lengths - SHINGLE + 1, 0)
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size < SHINGLE:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    windows = codes.size - SHINGLE + 1
    value = np.zeros(windows, dtype=np.uint64)
    for offset in range(SHINGLE):  # a polynomial over the window's code points (wraps at 2^64)
        value = value * np.uint64(1_000_003) + codes[offset : offset + windows]
    keep = np.ones(windows, dtype=bool)
    ends = np.cumsum(lengths)[lengths > 0]
    crossing = (ends[:, None] - np.arange(1, SHINGLE)[None, :]).ravel()  # windows that run into the next row
    keep[crossing[crossing < windows]] = False
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    return _mix(value[keep]), rows


def signatures(texts: list[str]) -> np.ndarray:
    """One-permutation MinHash: rows × BINS, the smallest hash per bin (_EMPTY where a bin got none)."""
    hashes, rows = _shingle_hashes(texts)
    signature = np.full(len(texts) * BINS, _EMPTY, dtype=np.uint64)
    np.minimum.at(signature, rows * BINS + (hashes % np.uint64(BINS)).astype(np.int64), hashes >> np.uint64(6))
    return signature.reshape(len(texts), BINS)


def band_width(threshold: float) -> int:
    """Bins per band: the widest (fewest false candidates) that misses a pair at the threshold with
    probability < MISS."""
    for width in range(BINS, 0, -1):
        if (1 - threshold**width) ** (BINS // width) < MISS:
            return width
    return 1


def band_keys(signature: np.ndarray, width: int) -> np.ndarray:
    """rows × bands: one hash per band of `width` bins; 0 where the whole band is empty (never a match)."""
    bands = BINS // width
    grouped = signature[:, : bands * width].reshape(len(signature), bands, width)
    key = np.zeros(grouped.shape[:2], dtype=np.uint64)
    for column in range(width):
        key = _mix(key ^ grouped[:, :, column])
    key[(grouped == _EMPTY).all(axis=2)] = 0
    return key


def _candidates(train_keys: np.ndarray, eval_keys: np.ndarray) -> dict[int, set[int]]:
    """{training row: eval rows agreeing with it on at least one whole band}."""
    found: dict[int, set[int]] = {}
    for band in range(train_keys.shape[1]):
        table: dict[int, list[int]] = {}
        for row, key in enumerate(eval_keys[:, band].tolist()):
            if key:
                table.setdefault(key, []).append(row)
        column = train_keys[:, band]
        hits = np.nonzero(np.isin(column, np.fromiter(table, dtype=np.uint64, count=len(table))) & (column != 0))[0]
        for row in hits.tolist():
            found.setdefault(row, set()).update(table[int(column[row])])
    return found


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class Match:
    """A training row that is a near-copy of an eval prompt: where each is, and how similar."""

    train: int
    eval_set: str
    eval_row: int
    similarity: float


def find(train: list[dict], eval_sets: dict[str, list[dict]], threshold: float = DEFAULT_THRESHOLD) -> list[Match]:
    """Every training row whose prompt is a near-copy of a prompt in any eval set, with its most similar one."""
    threshold = check_threshold(threshold)
    where = [(name, row) for name, records in eval_sets.items() for row in range(len(records))]
    if threshold == 0 or not train or not where:
        return []
    eval_texts = [normalise(prompt_text(eval_sets[name][row])) for name, row in where]
    width = band_width(threshold)
    eval_keys = band_keys(signatures(eval_texts), width)
    eval_shingles: dict[int, set[str]] = {}
    matches = []
    for start in range(0, len(train), CHUNK_ROWS):
        texts = [normalise(prompt_text(r)) for r in train[start : start + CHUNK_ROWS]]
        found = _candidates(band_keys(signatures(texts), width), eval_keys)
        for row in sorted(found):
            best = _closest(texts[row], found[row], eval_texts, eval_shingles, threshold)
            if best:
                matches.append(Match(start + row, *where[best[0]], round(best[1], 4)))
    return matches


def _closest(
    text: str, candidates: set[int], eval_texts: list[str], cache: dict[int, set[str]], threshold: float
) -> tuple[int, float] | None:
    """(eval row, similarity) of the candidate most similar to `text` at or above the threshold, exactly (the
    candidates' shingle sets are made once, in `cache`)."""
    mine, best = shingles(text), None
    for other in sorted(candidates):
        if other not in cache:
            cache[other] = shingles(eval_texts[other])
        similarity = jaccard(mine, cache[other])
        if similarity >= threshold and (best is None or similarity > best[1]):
            best = (other, similarity)
    return best


class Index:
    """Eval prompts ready to be asked about one row at a time, as self-instruct checks each task it generates:
    the same signatures, bands and exact Jaccard as `find`, the eval side hashed once."""

    def __init__(self, eval_sets: dict[str, list[dict]], threshold: float = DEFAULT_THRESHOLD):
        self.threshold = check_threshold(threshold)
        self.eval_sets = eval_sets
        self.where = [(name, row) for name, records in eval_sets.items() for row in range(len(records))]
        self.texts = [normalise(prompt_text(eval_sets[name][row])) for name, row in self.where]
        self.width = band_width(self.threshold) if self.threshold else BINS
        self.bands: list[dict[int, list[int]]] = []
        self.cache: dict[int, set[str]] = {}
        if self.threshold and self.texts:
            keys = band_keys(signatures(self.texts), self.width)
            self.bands = [{} for _ in range(keys.shape[1])]
            for row, row_keys in enumerate(keys.tolist()):
                for band, key in enumerate(row_keys):
                    if key:
                        self.bands[band].setdefault(key, []).append(row)

    def nearest(self, record: dict) -> tuple[str, int, float] | None:
        """(eval set, row, similarity) of the eval prompt `record`'s prompt is a near-copy of, or None."""
        if not self.bands:
            return None
        text = normalise(prompt_text(record))
        found = set()
        for band, key in enumerate(band_keys(signatures([text]), self.width)[0].tolist()):
            if key:
                found.update(self.bands[band].get(key, ()))
        best = _closest(text, found, self.texts, self.cache, self.threshold)
        return (*self.where[best[0]], round(best[1], 4)) if best else None


def _shown(record: dict) -> str:
    text = record["instruction"] + (f" | {record['input']}" if record["input"] else "")
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def report(matches: list[Match], train: list[dict], eval_sets: dict[str, list[dict]], threshold: float) -> dict:
    """What the data summary keeps: the threshold, counts (in all and per eval set) and a few pairs.

    The pairs shown are the least similar ones, closest to the threshold: they
    show whether it is set too low.
    """
    closest = sorted(matches, key=lambda m: (m.similarity, m.train))[:EXAMPLES]
    return {
        "near_duplicate_threshold": threshold,
        "near_duplicates_removed": len(matches),
        "near_duplicates_by_set": {name: sum(m.eval_set == name for m in matches) for name in eval_sets},
        "near_duplicate_examples": [
            {
                "eval_set": m.eval_set,
                "eval_prompt": _shown(eval_sets[m.eval_set][m.eval_row]),
                "train_prompt": _shown(train[m.train]),
                "similarity": m.similarity,
            }
            for m in closest
        ],
    }
