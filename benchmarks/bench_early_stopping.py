"""Early stopping against the fixed-step run, on SmolLM2-135M and the bundled data, in one process.

Both runs train the same candidate (the `local` roster's first) from the same split — the `cpu`
profile's held-out split, and a dev split carved from the training rows that the fixed run does
not train on either — with the `cpu` profile's recipe for BENCH_ES_STEPS optimizer steps (default
160, ~25 min here; the profile's 16 are too few for a stop to mean anything, and at 48 dev still
improves). The early-stopped run scores its dev split every 8 steps and stops after 2 evaluations
without a gain of 0.005 bits per byte, keeping its best adapter.

Reported: steps run, training seconds, held-out bits per byte of each with its 95 % bootstrap
interval, and the paired difference (early-stopped − fixed) over the same held-out rows. The
claims: steps and seconds as ratios against the fixed run measured here, and "no worse": the
early-stopped run's held-out bits per byte is within the fixed run's interval or below it.
Run with `make bench`; writes benchmarks/results/early-stopping-cpu.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from barbarossa import config
from barbarossa.console import console
from barbarossa.data import instructions
from barbarossa.evaluate import protocol, stats
from barbarossa.models import roster
from barbarossa.train import loop

STEPS = int(os.environ.get("BENCH_ES_STEPS", 160))
EARLY = {"dev_rows": 32, "eval_every": 8, "patience": 2, "min_delta": 0.005, "fail_fast_steps": 0}
OUT = Path(__file__).with_name("results") / "early-stopping-cpu.json"


def run(item: dict, split: dict, settings: config.Profile) -> dict:
    settings = settings.for_item(item)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.time()
        trained = loop.train(item, split, settings, tmp)
        seconds = time.time() - started
        metrics = protocol.evaluate(item, None, split, settings, trained=trained)
    per_row = metrics["per_row"]["heldout"]
    return {
        "steps": trained.result["steps"],
        "train_seconds": round(seconds, 1),
        "bits_per_byte": metrics["bits_per_byte"],
        "interval": stats.intervals(per_row)["bits_per_byte"],
        "early": trained.result["early"],
        "per_row": per_row,
    }


def main() -> None:
    profile = config.load_profile("cpu")
    candidate = roster.all_rosters()["local"].candidates[0]
    item = {"name": candidate.name, "kind": "candidate", "base": asdict(candidate.base), "lora": asdict(candidate.lora)}
    eval_cfg = profile.eval.replace(generate_rows=4, samples=1)  # bits per byte is the comparison; answers cost time
    with tempfile.TemporaryDirectory() as tmp:
        split = instructions.prepare(
            str(instructions.BUNDLED),
            None,
            tmp,
            eval_fraction=eval_cfg.eval_fraction,
            seed=eval_cfg.split_seed,
            near_duplicate_threshold=eval_cfg.near_duplicate_threshold,
            dev_rows=EARLY["dev_rows"],
        )
        base = config.Profile(
            "bench", train=profile.train.replace(max_steps=STEPS, log_every=8, checkpoint_every=0), eval=eval_cfg
        )
        fixed = run(item, split, base)
        stopped = run(item, split, dataclasses.replace(base, early_stopping=config.EarlyStopping(**EARLY)))
    delta = stats.paired(stopped["per_row"], fixed["per_row"])["bits_per_byte"]
    no_worse = stopped["bits_per_byte"] <= fixed["interval"][1]
    report = {
        "model": item["base"]["name"],
        "max_steps": STEPS,
        "early_stopping": EARLY,
        "fixed": {k: v for k, v in fixed.items() if k not in ("per_row", "early")},
        "early_stopped": {k: v for k, v in stopped.items() if k != "per_row"},
        "steps_ratio": round(stopped["steps"] / fixed["steps"], 3),
        "seconds_ratio": round(stopped["train_seconds"] / fixed["train_seconds"], 3),
        "paired_delta_bits_per_byte": delta,
        "no_worse": no_worse,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"[bold]early stopping vs fixed {STEPS} steps[/] ({item['name']}, cpu profile recipe):")
    for name, row in (("fixed", fixed), ("early-stopped", stopped)):
        console.print(
            f"  {name:14} {row['steps']:3} steps, {row['train_seconds']:6.1f} s, held-out "
            f"{row['bits_per_byte']:.4f} bits per byte {row['interval']}"
        )
    console.print(
        f"  steps {report['steps_ratio']:.2f}×, training time {report['seconds_ratio']:.2f}× of the fixed run; "
        f"paired Δ {delta['ci']} (p = {delta['p']}); no worse than the fixed run's interval: {no_worse}"
    )
    console.print(f"  why it stopped: {stopped['early']['reason'] or 'it did not: every evaluation improved'}")


if __name__ == "__main__":
    main()
