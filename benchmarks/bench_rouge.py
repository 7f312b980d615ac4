"""ROUGE-L for self-instruct's `similar` rule: barbarossa.selfinstruct.rouge against rouge-score, measured here.

  (a) English pairs (the bundled English sample's instructions and answers): the largest score difference from
      `rouge_score.rouge_scorer.RougeScorer(["rougeL"])` (should be 0) and the time per pair, ratio to it;
  (b) Azerbaijani: how rouge-score's ASCII tokenizer cuts the words, and the mean score of unrelated
      instruction pairs of the bundled sample by each;
  (c) the pool: new instructions against pools of 5K and 52K Azerbaijani instructions (synthetic ones from
      barbarossa.data.synthetic, and the bundled sample's reworded, which share more words; a fifth of the
      queries are near-copies of pool entries): the bounded `SimilarityPool.most_similar` against the naive
      scan that scores every pair (same decisions, time ratio), and against rouge-score on every pair, the way
      Alpaca's generator filters (one query timed).

Every ratio's baseline is measured in the same run. BENCH_ROUGE_QUERIES changes the number of pool queries.
Run with `make bench`.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rouge_score import rouge_scorer

from barbarossa.config import PROJECT_ROOT
from barbarossa.console import console
from barbarossa.data import synthetic
from barbarossa.selfinstruct import rouge

QUERIES = int(os.environ.get("BENCH_ROUGE_QUERIES", 200))
THRESHOLD = 0.7
POOLS = (("synthetic", synthetic.ALPACA_ROWS), ("reworded sample", 5_000), ("reworded sample", synthetic.ALPACA_ROWS))
NAIVE_QUERIES = {5_000: 40, synthetic.ALPACA_ROWS: 8}  # the naive scan is slow: fewer queries, timed per query


def sample(name: str) -> list[dict]:
    path = PROJECT_ROOT / "data" / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def timed(function, items) -> tuple[list, float]:
    started = time.perf_counter()
    results = [function(*item) for item in items]
    return results, time.perf_counter() - started


def english_agreement() -> None:
    texts = [row[field] for row in sample("en_alpaca_sample.jsonl") for field in ("instruction", "output")]
    pairs = list(itertools.combinations(texts, 2))
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    theirs, their_s = timed(lambda a, b: scorer.score(a, b)["rougeL"].fmeasure, pairs)
    ours, our_s = timed(rouge.rouge_l, pairs)
    worst = max(abs(a - b) for a, b in zip(ours, theirs))
    console.print(f"\n[bold]English pairs[/] ({len(pairs)}, from the bundled English sample)")
    console.print(f"  largest difference from rouge-score : {worst:.1e}")
    console.print(f"  rouge-score                         : {their_s / len(pairs) * 1e6:7.1f} µs a pair")
    console.print(f"  selfinstruct.rouge                  : {our_s / len(pairs) * 1e6:7.1f} µs a pair")
    console.print(f"  speed-up                            : [bold]{their_s / our_s:.1f}×[/]")


def azerbaijani_words() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    text = "Azərbaycanın paytaxtı hansı şəhərdir?"
    console.print("\n[bold]Azerbaijani[/]")
    console.print(f"  {text!r} → rouge-score {scorer._tokenizer.tokenize(text)}, here {rouge.words(text)}")
    instructions = [row["instruction"] for row in sample("az_alpaca_sample.jsonl")][:120]
    pairs = list(itertools.combinations(instructions, 2))
    theirs = [scorer.score(a, b)["rougeL"].fmeasure for a, b in pairs]
    ours = [rouge.rouge_l(a, b) for a, b in pairs]
    console.print(f"  mean ROUGE-L of {len(pairs)} pairs of distinct sample instructions:")
    console.print(f"    rouge-score {sum(theirs) / len(pairs):.3f}, here {sum(ours) / len(pairs):.3f}")
    console.print(
        f"    pairs above {THRESHOLD} (`similar`): rouge-score {sum(s > THRESHOLD for s in theirs)}, "
        f"here {sum(s > THRESHOLD for s in ours)}"
    )


def near_copy(words: list[str], rng: random.Random, vocabulary: list[str]) -> list[str]:
    changed = list(words)
    for _ in range(rng.randrange(1, 3)):
        changed[rng.randrange(len(changed))] = rng.choice(vocabulary)
    return changed


def synthetic_instructions(count: int, seed: int) -> list[list[str]]:
    """barbarossa.data.synthetic's instructions: words of the bundled sample drawn uniformly (few shared)."""
    return [rouge.words(row["instruction"].rpartition(" (")[0]) for row in synthetic.alpaca_rows(count, seed=seed)]


def reworded_instructions(count: int, seed: int) -> list[list[str]]:
    """The bundled sample's instructions, each word kept with probability 0.4, else replaced by a word drawn by
    its frequency in the sample: shared openings and frequent words, as a teacher's tasks have, so more pairs
    pass the bounds and reach the LCS."""
    rows = sample("az_alpaca_sample.jsonl")
    bases = [rouge.words(row["instruction"]) for row in rows]
    frequency = Counter(word for row in rows for field in ("instruction", "output") for word in rouge.words(row[field]))
    words, weights = list(frequency), list(frequency.values())
    rng, made = random.Random(seed), []
    for _ in range(count):
        base = rng.choice(bases)
        drawn = rng.choices(words, weights, k=len(base))
        made.append([word if rng.random() < 0.4 else other for word, other in zip(base, drawn)])
    return made


def pool_queries(kind: str, size: int, rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
    """A pool of `size` instructions and QUERIES new ones, a fifth near-copies of pool entries."""
    made = (synthetic_instructions if kind == "synthetic" else reworded_instructions)(size + QUERIES, size)
    pool, fresh = made[:size], made[size:]
    vocabulary = synthetic.vocabulary()
    queries = [near_copy(rng.choice(pool), rng, vocabulary) if rng.random() < 0.2 else q for q in fresh]
    return pool, queries


def rouge_score_scan(query: list[str], pool: list[list[str]]) -> float:
    """Alpaca's way: rouge-score on every pair (the texts joined back; their words are ASCII-safe here only in
    count, which is all the timing needs)."""
    scorer, text = rouge_scorer.RougeScorer(["rougeL"]), " ".join(query)
    return max(scorer.score(text, " ".join(other))["rougeL"].fmeasure for other in pool)


def pool_speed(kind: str, size: int) -> None:
    pool, queries = pool_queries(kind, size, random.Random(size))
    index = rouge.SimilarityPool()
    started = time.perf_counter()
    for words in pool:
        index.add(words)
    built_s = time.perf_counter() - started
    found, bounded_s = timed(lambda q: index.most_similar(q, THRESHOLD), [(q,) for q in queries])
    naive_count = NAIVE_QUERIES[size]
    naive, naive_s = timed(
        lambda q: rouge.naive_most_similar(q, pool, THRESHOLD), [(q,) for q in queries[:naive_count]]
    )
    _, theirs_s = timed(lambda q: rouge_score_scan(q, pool), [(queries[0],)])
    same = all((a is None) == (b is None) and (a is None or a[0] == b[0]) for a, b in zip(found, naive))
    bounded_each, naive_each = bounded_s / len(queries), naive_s / naive_count
    console.print(f"\n[bold]Pool of {size:,} {kind} instructions[/] ({len(queries)} queries, {naive_count} naively)")
    console.print(f"  built in {built_s:.1f} s; {sum(f is not None for f in found)} queries `similar`")
    console.print(f"  rouge-score, every pair  : {theirs_s * 1e3:8.1f} ms a query (one query)")
    console.print(f"  naive scan (every pair)  : {naive_each * 1e3:8.1f} ms a query")
    console.print(f"  bounds, then LCS         : {bounded_each * 1e3:8.2f} ms a query")
    console.print(
        f"  speed-up                 : [bold]{naive_each / bounded_each:.0f}×[/] over the naive scan, "
        f"{theirs_s / bounded_each:.0f}× over rouge-score; same decisions: {same}"
    )
    if not same:
        raise SystemExit("the bounded pool decided differently from the naive scan")


def main() -> None:
    console.print("[bold]ROUGE-L[/]: selfinstruct.rouge against rouge-score and against scoring every pair")
    english_agreement()
    azerbaijani_words()
    for kind, size in POOLS:
        pool_speed(kind, size)


if __name__ == "__main__":
    main()
