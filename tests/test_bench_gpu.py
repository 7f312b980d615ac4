"""`make gpu-check` without CUDA: the same code at tiny shapes on the CPU, so CI keeps it from rotting."""

import json
import os
import subprocess
import sys

from conftest import ROOT

from barbarossa.engine import runtime


def test_gpu_check_runs_on_the_cpu_at_tiny_shapes_and_says_so(tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no CUDA: tiny shapes on the CPU" in done.stdout
    report = json.loads(out.read_text())
    assert report["cuda"] is False and report["note"].startswith("no CUDA")
    cases = {row["case"]: row for row in report["training"]}
    assert set(cases) == {"tiny LoRA", "tiny LoRA, shared-prefix layout", "tiny QLoRA"}
    assert cases["tiny QLoRA"]["runtime"]["quantization"] == "nf4"
    assert all(row["real_tokens_per_second"] > 0 and row["planned_gb"] > 0 for row in cases.values())
    speed = {row["case"]: row for row in report["speed"]}  # the comparison with TRL runs here too, at tiny shapes
    assert set(speed) == {"tiny LoRA, levers off", "tiny LoRA, TRL SFTTrainer", "tiny LoRA, TRL SFTTrainer, liger"}
    off = speed["tiny LoRA, levers off"]["runtime"]
    assert (off["compiled"], off["kernels"], off["attention"], off["adapter_dtype"]) == (False, "torch", "sdpa", "fp32")
    assert speed["tiny LoRA, TRL SFTTrainer"]["real_tokens_per_second"] > 0
    assert speed["tiny LoRA, TRL SFTTrainer, liger"]["skipped"] == "needs CUDA and liger-kernel"
    [evaluated] = report["evaluation"]
    assert evaluated["generated_rows"] == 4 and evaluated["eval_seconds"] > 0
    [equal] = report["equality"]
    host = runtime.choose_precision(runtime.probe(), "auto")  # bf16 where this CPU runs it natively (AVX512-BF16/AMX)
    worst = max(v for k, v in equal.items() if k.endswith("difference"))
    assert equal["dtype"] == host and worst < (1e-4 if host == "fp32" else 1e-2)  # 1e-2: bench_gpu's own bf16 target
