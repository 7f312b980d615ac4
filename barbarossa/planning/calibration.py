"""GPU-hours and wall-clock time of a roster on the GPUs a user has, from measured throughput.

`plan.py` prices each candidate at an assumed MFU. Measured MFU depends strongly on model size (the
H200 `make gpu-check`: 1.6 % at 135M, 16 % at 1.1B, 35 % at 7B), so `measured()` reads every
`benchmarks/results/gpu-check-*.json` kept in the repository and interpolates MFU in log(params)
between the measured shapes (clamped outside them); it assumes the same MFU on other GPUs of the
same class. `wall_clock()` then replays the local run: the rows arrive in the plan's order and lease
memory by the rule the local leases apply (`planning/scheduling.py`, called by `infra/leases.py` too):
items share a GPU while their leases fit its memory, and share its compute while the sum of their
MFUs stays under the best MFU measured; beyond that they slow down together.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from barbarossa.config import PROJECT_ROOT
from barbarossa.engine.runtime import HEADROOM
from barbarossa.planning import scheduling
from barbarossa.planning.scheduling import Gpu

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
WORKERS = 16  # Metaflow's default --max-workers: the tasks of a local run alive at once, leased or waiting


@dataclass(frozen=True)
class Calibration:
    lora: tuple[tuple[float, float], ...]  # (params, MFU), plain LoRA at the profile's shape, by size
    qlora: tuple[tuple[float, float], ...]
    source: str

    @property
    def ceiling(self) -> float:
        """The best MFU measured: what several items sharing one GPU can reach together, at most."""
        return max(m for _, m in self.lora + self.qlora)

    def describe(self) -> str:
        points = ", ".join(f"{_size(p)} {m:.1%}" for p, m in self.lora)
        extra = f"; QLoRA {', '.join(f'{_size(p)} {m:.1%}' for p, m in self.qlora)}" if self.qlora else ""
        return (
            f"MFU measured by make gpu-check ({self.source}): LoRA {points}{extra}, interpolated in log(params), "
            f"clamped outside, assumed the same on other GPUs"
        )


def _size(params: float) -> str:
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def measured(folder: Path = RESULTS) -> Calibration | None:
    """MFU points from the GPU checks kept in the repository (None when there are none)."""
    lora, qlora, sources = [], [], []
    for path in sorted(folder.glob("gpu-check-*.json")):
        report = json.loads(path.read_text())
        if not report.get("cuda"):
            continue
        sources.append(f"{path.name}, {report.get('device', '?')}")
        for row in report.get("training", []):
            if "," in row["case"] or not row.get("mfu"):  # variants (other layouts, batch sizes) are not the profile's
                continue
            nf4 = row.get("runtime", {}).get("quantization") == "nf4"
            (qlora if nf4 else lora).append((float(row["params"]), float(row["mfu"])))
    if not lora:
        return None
    return Calibration(tuple(sorted(lora)), tuple(sorted(qlora)), "; ".join(sources))


def mfu_at(calibrated: Calibration, params: float, quantization: str = "none") -> float:
    """MFU at `params`: linear in log(params) between measured points, the nearest point's outside them."""
    points = calibrated.qlora if quantization == "nf4" and calibrated.qlora else calibrated.lora
    if params <= points[0][0]:
        return points[0][1]
    if params >= points[-1][0]:
        return points[-1][1]
    for (p0, m0), (p1, m1) in zip(points, points[1:]):
        if p0 <= params <= p1:
            t = (math.log(params) - math.log(p0)) / (math.log(p1) - math.log(p0))
            return m0 + t * (m1 - m0)
    raise AssertionError("unreachable")


def parse_gpus(text: str, known: dict) -> tuple[int, str]:
    """`4xA100-80GB` → (4, "A100-80GB")."""
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\S+)\s*", text)
    if not match or match.group(2) not in known or int(match.group(1)) < 1:
        raise ValueError(f"--gpus: {text!r} is not <count>x<GPU> with a GPU of {', '.join(known)} (e.g. 4xA100-80GB)")
    return int(match.group(1)), match.group(2)


def wall_clock(rows: list[dict], count: int, memory_gb: float, ceiling: float, workers: int = WORKERS) -> dict:
    """Hours until every row has trained on `count` GPUs of `memory_gb`, and the GPU-hours the GPUs are busy."""
    runs = schedule(rows, [Gpu(i, memory_gb) for i in range(count)], ceiling, workers)
    return {
        "gpus": count,
        "wall_hours": round(max((r["end"] for r in runs), default=0.0), 3),
        "busy_gpu_hours": round(_busy_hours(runs), 3),
        "work_gpu_hours": round(sum(r["gpu_hours"] for r in rows if r.get("fits") != "no"), 3),
    }


def schedule(rows: list[dict], gpus: list[Gpu], ceiling: float, workers: int = WORKERS) -> list[dict]:
    """When and where each row runs on `gpus` under the lease rule: [{"name", "gpu", "start", "end"}] by start.

    An event simulation of the local run: tasks arrive in the plan's row order, at most `workers` at once
    (leased or waiting), and each leases `planned_gb` / HEADROOM through `scheduling.choose`, the function the
    real leases call, holding it until its `gpu_hours` of solo work are done. On one GPU the running rows
    progress at min(1, ceiling / Σ their MFU) of their solo speed.
    """
    tasks = [
        {
            "id": i,
            "since": i,
            "name": r["name"],
            "gb": r["planned_gb"] / HEADROOM,
            "left": r["gpu_hours"],
            "mfu": r["mfu"],
        }
        for i, r in enumerate(rows)
        if r.get("fits") != "no" and r["gpu_hours"] > 0
    ]
    biggest = max(g.memory_gb for g in gpus)
    for task in tasks:
        if task["gb"] > biggest:
            raise ValueError(f"{task['name']}: a lease of {task['gb']:.1f} GB does not fit a {biggest:.0f} GB GPU")
    waiting: list[dict] = []
    running: list[dict] = []
    done: list[dict] = []
    now = 0.0
    while tasks or waiting or running:
        while tasks and len(waiting) + len(running) < workers:
            waiting.append(tasks.pop(0))
        for task in list(waiting):  # oldest first, as each real waiter polls `choose`
            index = scheduling.choose(gpus, running, waiting, task)
            if index is not None:
                task.update(gpu=index, start=now)
                running.append(task)
                waiting.remove(task)
        now = _advance(running, done, now, ceiling)
    return [
        {k: t[k] for k in ("name", "gpu", "start", "end")} for t in sorted(done, key=lambda t: (t["start"], t["since"]))
    ]


def _advance(running: list[dict], done: list[dict], now: float, ceiling: float) -> float:
    """Run until the next task ends (moved from `running` to `done`); the new time."""
    load: dict[int, float] = {}
    for task in running:
        load[task["gpu"]] = load.get(task["gpu"], 0.0) + task["mfu"]
    rates = [min(1.0, ceiling / load[task["gpu"]]) for task in running]
    step = min(task["left"] / rate for task, rate in zip(running, rates))
    now += step
    for task, rate in zip(list(running), rates):
        task["left"] -= step * rate
        if task["left"] <= 1e-9:
            task["end"] = now
            running.remove(task)
            done.append(task)
    return now


def _busy_hours(runs: list[dict]) -> float:
    """GPU-hours during which some run holds each GPU (overlapping runs on one GPU count once)."""
    total = 0.0
    for gpu in {r["gpu"] for r in runs}:
        end = 0.0
        for run in sorted((r for r in runs if r["gpu"] == gpu), key=lambda r: r["start"]):
            total += max(0.0, run["end"] - max(run["start"], end))
            end = max(end, run["end"])
    return total
