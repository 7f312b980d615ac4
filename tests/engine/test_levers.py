"""Speed levers are taken on CUDA only where a kept gpu-check report verified them on that class of GPU."""

import json

import pytest

from barbarossa.config import Train
from barbarossa.engine import levers, runtime

H100 = runtime.Hardware("cuda", "NVIDIA H100 80GB HBM3", 80.0, True)
LLAMA = {"name": "x", "family": "llama"}
SPEED_LEVERS = {"adapter_dtype", "compile", "kernels", "attention"}


@pytest.fixture
def records(tmp_path, monkeypatch):
    """An empty folder of gpu-check reports in place of benchmarks/results; every optional package installed."""
    monkeypatch.setenv(levers.RECORDS_ENV, str(tmp_path))
    monkeypatch.setattr(runtime, "installed", lambda module: True)
    return tmp_path


def keep_report(folder, gpu: str, passed: dict[str, bool], name: str = "gpu-check-test.json"):
    checked = {lever: {"passed": ok} for lever, ok in passed.items()}
    (folder / name).write_text(
        json.dumps({"device": gpu, "levers": {"gpu_class": levers.gpu_class(gpu), "checked": checked}})
    )


def test_without_a_verified_record_a_cuda_decision_takes_no_speed_lever_and_says_why(records):
    decision = runtime.decide(H100, Train(), LLAMA)
    assert (decision.adapter_dtype, decision.master_weights, decision.compiled) == ("fp32", False, False)
    assert (decision.kernels, decision.attention) == ("torch", "sdpa")
    assert set(decision.not_taken) == SPEED_LEVERS
    assert all("not verified on this GPU (H100)" in why for why in decision.not_taken.values())
    assert decision.compute == "bf16"  # precision is not a speed lever: bf16 where native, as before


def test_a_record_that_verifies_levers_on_this_gpu_class_lets_auto_take_them(records):
    keep_report(records, "NVIDIA H100 PCIe", {"compile": True, "flex_attention": True, "kernels": False})
    keep_report(records, "NVIDIA A100-SXM4-80GB", {"adapter_dtype": True}, "gpu-check-a100.json")  # another GPU
    decision = runtime.decide(H100, Train(), LLAMA)
    assert decision.compiled and decision.attention == "flex_attention"  # flash-attn installed but not verified
    assert decision.kernels == "torch" and "not verified" in decision.not_taken["kernels"]  # checked, failed
    assert decision.adapter_dtype == "fp32" and "not verified" in decision.not_taken["adapter_dtype"]
    assert set(decision.not_taken) == {"kernels", "adapter_dtype"}
    everything = frozenset(levers.CHECKED)
    full = runtime.decide(H100, Train(), LLAMA, verified=everything)
    assert (full.attention, full.kernels, full.compiled, full.adapter_dtype) == (
        "flash_attention_2",
        "liger",
        True,
        "bf16",
    )
    assert full.not_taken == {}


def test_a_lever_asked_for_by_name_is_taken_without_a_record(records):
    asked = Train(compile=True, kernels="liger", attention="flex_attention", adapter_dtype="bf16")
    decision = runtime.decide(H100, asked, LLAMA)
    assert (decision.compiled, decision.kernels, decision.attention, decision.adapter_dtype) == (
        True,
        "liger",
        "flex_attention",
        "bf16",
    )
    assert decision.not_taken == {}
    with pytest.raises(ValueError, match='adapter_dtype = "bf16" cannot run here: fp32 compute'):
        runtime.decide(H100, Train(adapter_dtype="bf16", precision="fp32"), LLAMA)


def test_the_kept_reports_verify_nothing_yet_and_the_plan_says_so():
    """benchmarks/results holds the H200 report from before the levers: no GPU has run them, so none is taken."""
    assert levers.verified("NVIDIA H200") == frozenset()
    decision = runtime.decide(runtime.Hardware("cuda", "NVIDIA H200", 141.0, True), Train(), LLAMA)
    assert runtime.taken_levers(decision) == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla T4", "T4"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA GeForce RTX 4090", "4090"),
        ("H200", "H200"),
    ],
)
def test_gpu_class_is_the_model_whatever_the_memory_and_form_factor(name, kind):
    assert levers.gpu_class(name) == kind


def test_a_taken_lever_turned_off_keeps_why_in_fallbacks():
    decision = runtime.decide(H100, Train(), LLAMA, verified=frozenset(levers.CHECKED))
    off = runtime.without(decision, "compile", "BackendCompilerFailed: x")
    assert off.compiled is False and off.fallbacks == {"compile": "BackendCompilerFailed: x"}
    assert runtime.taken_levers(off) == [lever for lever in runtime.taken_levers(decision) if lever != "compile"]
    assert off.as_dict()["fallbacks"] == off.fallbacks  # in the leaderboard row
