"""Which speed levers a GPU has been proven to run correctly, and which lever a first-step failure comes from.

A speed lever (bf16 adapters with fp32 masters, compiled layers, Liger's kernels, a variable-length
attention kernel) changes the code a step runs, not what it computes. "auto" takes one on CUDA only
where a kept `make gpu-check` report (`benchmarks/results/*.json`, like the calibration files)
records it verified on that class of GPU: it ran, and training with it matched the same training
with every lever off. Until such a report exists for a GPU, its tasks run the proven eager path
and the row's `not_taken` says why; a lever asked for by name is still taken.

If a taken lever fails when a task runs, the trainer's first-step guard (train/loop.py) turns it
off and goes on; `blame` says which lever an error came from by the code it was raised in.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from barbarossa.config import PROJECT_ROOT

RECORDS_ENV = "BARBAROSSA_LEVER_RECORDS"  # a folder of gpu-check reports to read instead of benchmarks/results
# What a report verifies, by name: the attention kernels are verified one by one
CHECKED = ("adapter_dtype", "compile", "kernels", "flex_attention", "flash_attention_2")
LEVERS = ("compile", "kernels", "attention", "adapter_dtype")  # the order the guard turns untraced ones off
# Where in a traceback each lever's code runs (module paths): what a failure is blamed on
TRACES = {
    "compile": ("torch/_dynamo/", "torch/_inductor/", "torch/_functorch/"),
    "kernels": ("liger_kernel/", "triton/"),
    "attention": ("flash_attn/", "flash_attn_interface", "torch/nn/attention/flex_attention"),
    "adapter_dtype": ("barbarossa/train/master.py",),
}


def records_folder() -> Path:
    return Path(os.environ.get(RECORDS_ENV) or PROJECT_ROOT / "benchmarks" / "results")


def gpu_class(name: str) -> str:
    """The model of a GPU from its device name: "NVIDIA H100 80GB HBM3" → "H100", "Tesla T4" → "T4"."""
    for word in re.split(r"[\s_-]+", name.replace("NVIDIA", " ")):
        if any(ch.isdigit() for ch in word) and not word.upper().endswith("GB"):
            return word.upper()
    return name.strip().upper() or "GPU"


def verified(hardware_name: str, folder: Path | None = None) -> frozenset[str]:
    """The levers (`CHECKED` names) a kept gpu-check report passed on this class of GPU."""
    wanted, passed = gpu_class(hardware_name), set()
    for path in sorted((folder or records_folder()).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8")).get("levers") or {}
        except (ValueError, AttributeError):
            continue
        if record.get("gpu_class") == wanted:
            passed |= {lever for lever, check in record.get("checked", {}).items() if check.get("passed")}
    return frozenset(passed)


def not_verified(gpu: str, lever: str) -> str:
    """The `not_taken` reason of a lever no kept report verifies on this GPU."""
    return (
        f"not verified on this GPU ({gpu_class(gpu)}): no kept gpu-check report passes {lever} there "
        f"(make gpu-check writes one; {lever} set by name is taken)"
    )


def blame(error: BaseException, taken: list[str]) -> str | None:
    """The taken lever whose code raised `error` (or one it caused), by the files in its traceback; None if none."""
    files = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        trace = error.__traceback__
        while trace is not None:
            files.append(trace.tb_frame.f_code.co_filename.replace(os.sep, "/"))
            trace = trace.tb_next
        error = error.__cause__ or error.__context__
    for lever in taken:
        if any(mark in file for file in files for mark in TRACES[lever]):
            return lever
    return None


def reason(error: BaseException) -> str:
    """An error in one line, for a log and the row: its first lines joined (a wrapped error names its cause on the
    second, as dynamo's BackendCompilerFailed does), cut at 240 characters."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = " ".join(lines[:3])
    text = text if len(text) <= 240 else text[:239] + "…"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
