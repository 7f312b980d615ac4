"""Alpaca-size synthetic Azerbaijani rows, for benchmarks and scale tests.

The bundled sample has a few hundred rows; data preparation and tokenisation
have to be measured at the 52K rows of the real Alpaca set. The words come from
the bundled sample, so tokenizers see real Azerbaijani text, and the lengths
follow Alpaca's shape: short instructions, an input on about 40 % of rows, and
answers from a word to a few hundred words.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from barbarossa.config import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "data" / "az_alpaca_sample.jsonl"
ALPACA_ROWS = 52_002
FALLBACK_WORDS = [
    "Azərbaycan",
    "Bakı",
    "şəhər",
    "dəniz",
    "su",
    "günəş",
    "kitab",
    "məktəb",
    "dil",
    "söz",
    "cavab",
    "sual",
    "ölkə",
    "tarix",
    "elm",
    "insan",
    "iş",
    "gün",
]


def vocabulary() -> list[str]:
    """Distinct words of the bundled sample, in a fixed order (the same rows on every machine)."""
    if not SAMPLE.exists():
        return FALLBACK_WORDS
    words = set()
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for name in ("instruction", "input", "output"):
            words.update(re.findall(r"\w+", row[name].lower()))
    return sorted(words)


def _sentence(rng: random.Random, words: list[str], length: int, end: str = ".") -> str:
    chosen = rng.choices(words, k=max(1, length))
    return " ".join([chosen[0].capitalize(), *chosen[1:]]) + end


def _text(rng: random.Random, words: list[str], total: int, end: str = ".") -> str:
    """About `total` words as sentences of 4 to 16 words."""
    sentences, left = [], max(1, total)
    while left > 0:
        length = min(left, rng.randint(4, 16))
        sentences.append(_sentence(rng, words, length, end))
        left -= length
    return " ".join(sentences)


def alpaca_rows(n: int = ALPACA_ROWS, seed: int = 0) -> list[dict]:
    """`n` distinct rows with Alpaca's field lengths; the same `seed` gives the same rows."""
    rng, words = random.Random(seed), vocabulary()
    rows = []
    for number in range(n):
        instruction = _text(rng, words, rng.randint(3, 24), rng.choice(".?")) + f" ({number})"
        source = _text(rng, words, int(rng.lognormvariate(2.6, 0.8))) if rng.random() < 0.4 else ""
        answer = _text(rng, words, min(600, int(rng.lognormvariate(3.4, 1.0))))
        rows.append({"instruction": instruction, "input": source, "output": answer})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object a line, UTF-8, as the Alpaca exports are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path
