"""Batched (left-padded, KV-cached) vs one-at-a-time greedy generation on SmolLM2-135M.

Both measured in this process on the same prompts and settings; the claim is the
ratio. Run with `make bench`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from barbarossa.console import console
from barbarossa.data import instructions
from barbarossa.engine import loading
from barbarossa.evaluate import protocol
from barbarossa.models import roster

PROMPTS = 16
SETTINGS = ((48, 8), (160, 16))  # (answer budget, batch): the cpu profile's, and closer to the gpu profile's (256, 16)


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    base = roster.all_rosters()["local"].candidates[0].base
    tokenizer, model = loading.load_base(asdict(base))
    model.eval()
    train, held = instructions.split_holdout(instructions.load(str(instructions.BUNDLED)).records, 0.1, seed=0)
    records = held[:PROMPTS]
    protocol.generate(model, tokenizer, records[:2], 4, 2)  # warm-up
    for budget, batch in SETTINGS:
        single, single_s = timed(
            lambda budget=budget: [protocol.generate(model, tokenizer, [r], budget, 1)[0] for r in records]
        )
        batched, batched_s = timed(
            lambda budget=budget, batch=batch: protocol.generate(model, tokenizer, records, budget, batch)
        )
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in batched)
        same = sum(a == b for a, b in zip(single, batched))
        console.print(f"generation, {base.name}, {PROMPTS} prompts × ≤{budget} new tokens, greedy, CPU fp32")
        console.print(f"  one at a time : {single_s:6.1f} s")
        console.print(
            f"  batched (×{batch}) : {batched_s:6.1f} s  ({tokens / batched_s:.0f} answer tokens/s, "
            "counted after the cut at the next section)"
        )
        console.print(f"  speed-up      : [bold]{single_s / batched_s:.2f}×[/]   identical answers: {same}/{PROMPTS}")


if __name__ == "__main__":
    main()
