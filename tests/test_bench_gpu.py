"""`make gpu-check` without CUDA: the same code at tiny shapes on the CPU, so CI keeps it from rotting."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from barbarossa.engine import kernels, runtime
from barbarossa.models import tiny
from barbarossa.train import master
from benchmarks import bench_gpu, lever_check


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
    assert report["levers"]["checked"]["adapter_dtype"]["passed"]  # the correctness half runs here too
    assert "PASS   lever adapter_dtype" in done.stdout


def test_the_cpu_check_verifies_the_levers_a_cpu_can_run_and_records_them_by_gpu(tmp_path):
    out = tmp_path / "levers.json"
    assert bench_gpu.main(["--levers-only", "--json", str(out)]) == 0
    record = json.loads(out.read_text())["levers"]
    assert record["gpu_class"] == "cpu"  # never read as a GPU's verification (levers.verified matches GPU classes)
    checked = record["checked"]
    assert checked["adapter_dtype"]["passed"] and checked["adapter_dtype"]["final_difference"] <= 0.01
    assert all("skipped" in checked[lever] for lever in ("compile", "flex_attention", "flash_attention_2", "kernels"))


def test_a_lever_made_to_change_the_loss_fails_the_check_and_its_exit_code(tmp_path, monkeypatch, capsys):
    stepped = master.MasterWeights.step

    def drifting_step(self):  # the bf16-adapter lever now moves every LoRA weight a little after each update
        stepped(self)
        self.master.data.add_(1e-3)
        self.flat.copy_(self.master.detach())

    monkeypatch.setattr(master.MasterWeights, "step", drifting_step)
    out = tmp_path / "levers.json"
    assert bench_gpu.main(["--levers-only", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["levers"]["checked"]["adapter_dtype"]["passed"] is False
    assert any(line.startswith("FAILED lever adapter_dtype: trains something else") for line in report["verdicts"])
    assert bench_gpu.main(["--levers-only", "--report-only"]) == 0  # the same failure, reported without failing
    assert "FAILED lever adapter_dtype" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    """bench_gpu's tiny LLaMA after a few levers-off steps, and its split, for the fused-loss check."""
    tmp = tmp_path_factory.mktemp("fused")
    tokenizer = tiny.build_tokenizer()
    folder = bench_gpu.build(bench_gpu.TINY, tokenizer, tmp / "tiny", "cpu")
    split = bench_gpu.write_data(tmp, tokenizer, 128, 4)
    cfg, _ = bench_gpu.settings(False, 2)
    lora = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "attention"}
    return lever_check.train(folder, split, {**cfg, "max_length": 128}, lora, {}), split


def linear_cross_entropy(weight, hidden, target):
    """What Liger's fused loss computes, unfused: the projection, then per-token cross-entropy."""
    return torch.nn.functional.cross_entropy(
        torch.nn.functional.linear(hidden, weight).float(), target, reduction="none"
    )


def test_the_fused_loss_is_checked_with_gradients_on(trained_tiny):
    trained, split = trained_tiny
    base = kernels.base_of(trained.model)
    base.fused_linear_cross_entropy = linear_cross_entropy  # a correct stand-in for Liger's (CUDA-only) kernel
    good = lever_check.fused_loss_check(trained, split, 128)
    assert good["passed"] and good["loss_difference"] < 1e-3 and good["gradient_difference"] < 1e-2
    # the same loss with no gradient into the model: a no-grad equality check cannot tell it from the right one
    base.fused_linear_cross_entropy = lambda weight, hidden, target: linear_cross_entropy(
        weight, hidden.detach(), target
    )
    wrong = lever_check.fused_loss_check(trained, split, 128)
    assert wrong["loss_difference"] < 1e-3 and wrong["gradient_difference"] > 0.5 and not wrong["passed"]
