"""Multiple-choice scoring with each item's prompt shared by its choices vs every choice scored alone, SmolLM2-135M.

The az pack's Belebele-format sample (12 items × 4 choices, a passage each), both
layouts in this process on the same records, fp32; the claim is the time ratio,
with the largest difference in any choice's NLL beside it. Run with `make bench`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_generation import timed

from barbarossa import languages
from barbarossa.console import console
from barbarossa.data import benchmark_sets
from barbarossa.engine import loading, scoring
from barbarossa.models import roster

BATCH = 8  # the cpu profile's eval batch: two items of four choices
OUT = Path(__file__).parent / "results" / "choice-scoring-cpu.json"


def main() -> None:
    pack = languages.load("az")
    base = roster.all_rosters()["local"].candidates[0].base
    tokenizer, model = loading.load_base(asdict(base))
    model.eval()
    [belebele] = [
        s for s in benchmark_sets.load_all(benchmark_sets.entries_for(pack, []), pack) if s["name"] == "belebele"
    ]
    records = [
        {"instruction": item["question"], "input": item["context"], "output": choice}
        for item in belebele["items"]
        for choice in item["choices"]
    ]
    scoring.response_nll(model, tokenizer, records[:4], 2048, 4, template=pack)  # warm-up
    alone, alone_s = timed(lambda: scoring.response_nll(model, tokenizer, records, 2048, BATCH, template=pack))
    shared, shared_s = timed(
        lambda: scoring.response_nll(model, tokenizer, records, 2048, BATCH, template=pack, share_prompts=True)
    )
    worst = max(abs(a - b) for a, b in zip(alone["nll"], shared["nll"]))
    result = {
        "model": base.name,
        "items": len(belebele["items"]),
        "choices": len(records),
        "batch": BATCH,
        "alone_seconds": round(alone_s, 2),
        "shared_seconds": round(shared_s, 2),
        "speedup": round(alone_s / shared_s, 2),
        "max_abs_nll_difference": worst,
    }
    console.print(
        f"multiple-choice scoring, {base.name}, {len(belebele['items'])} Belebele-format items × 4 choices, "
        f"batch {BATCH}, CPU {next(model.parameters()).dtype}"
    )
    console.print(f"  each choice alone    : {alone_s:6.1f} s")
    console.print(f"  prompt shared        : {shared_s:6.1f} s")
    console.print(
        f"  speed-up             : [bold]{alone_s / shared_s:.2f}×[/]   largest NLL difference {worst:.2e} nats"
    )
    OUT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
