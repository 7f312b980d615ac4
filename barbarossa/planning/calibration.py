"""GPU-hours and wall-clock time of a roster on the GPUs a user has, from measured throughput.

`plan.py` prices each candidate at an assumed MFU. Measured MFU depends strongly on model size (the
H200 `make gpu-check`: 1.6 % at 135M, 16 % at 1.1B, 35 % at 7B), so `measured()` reads every
`benchmarks/results/gpu-check-*.json` kept in the repository and interpolates MFU in log(params)
between the measured shapes (clamped outside them); it assumes the same MFU on other GPUs of the
same class. `wall_clock()` then runs the roster through the local lease rule (`infra/leases.py`):
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

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


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


def wall_clock(rows: list[dict], count: int, memory_gb: float, ceiling: float) -> dict:
    """Hours until every row has trained on `count` GPUs of `memory_gb`, and the GPU-hours the GPUs are busy.

    Each row needs `planned_gb` / HEADROOM of memory (its lease) and `gpu_hours` of work at its own `mfu`
    when alone. Rows start longest first, each on the GPU where its lease fits most tightly; on one GPU
    the running rows progress at min(1, ceiling / Σ their MFU) of their solo speed.
    """
    waiting = sorted((r for r in rows if r.get("fits") != "no" and r["gpu_hours"] > 0), key=lambda r: -r["gpu_hours"])
    running: list[list] = [[] for _ in range(count)]  # per GPU: [remaining solo hours, lease GB, mfu]
    now = busy = 0.0
    while waiting or any(running):
        for row in list(waiting):
            lease = row["planned_gb"] / HEADROOM
            free = [(memory_gb - sum(r[1] for r in gpu), i) for i, gpu in enumerate(running)]
            fitting = [(room - lease, i) for room, i in free if room >= lease]
            if fitting:
                running[min(fitting)[1]].append([row["gpu_hours"], lease, row["mfu"]])
                waiting.remove(row)
            elif all(not gpu for gpu in running):
                raise ValueError(f"{row['name']}: a lease of {lease:.1f} GB does not fit a {memory_gb:.0f} GB GPU")
        rates = [min(1.0, ceiling / sum(r[2] for r in gpu)) if gpu else 0.0 for gpu in running]
        step = min(r[0] / rate for gpu, rate in zip(running, rates) for r in gpu)
        now += step
        busy += step * sum(1 for gpu in running if gpu)
        for gpu, rate in zip(running, rates):
            for r in gpu:
                r[0] -= step * rate
            gpu[:] = [r for r in gpu if r[0] > 1e-9]
    return {
        "gpus": count,
        "wall_hours": round(now, 3),
        "busy_gpu_hours": round(busy, 3),
        "work_gpu_hours": round(sum(r["gpu_hours"] for r in rows if r.get("fits") != "no"), 3),
    }
