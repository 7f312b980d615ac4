"""The one runtime decision: device, dtype, quantisation and checkpointing, and that training, evaluation and
release obey it."""

import json

import pytest
import torch
from conftest import settings_for, write_jsonl

from barbarossa import config
from barbarossa.config import Train
from barbarossa.data import instructions
from barbarossa.decide import bundles
from barbarossa.engine import loading, runtime
from barbarossa.evaluate import protocol
from barbarossa.train import loop

H100 = runtime.Hardware("cuda", "H100", 80.0, True)
T4 = runtime.Hardware("cuda", "T4", 16.0, False)
CPU = runtime.Hardware("cpu", "cpu", 24.0, False)
LLAMA = {"name": "x", "family": "llama"}
T5 = {"name": "t", "family": "t5"}


def test_precision_follows_the_hardware_unless_the_profile_forces_it():
    assert runtime.decide(H100, Train(), LLAMA).weight_dtype == "bf16"
    t4 = runtime.decide(T4, Train(), LLAMA)
    assert (t4.weight_dtype, t4.compute, t4.loss_scaling) == ("fp16", "fp16", True)  # bf16 only emulated on a T4
    assert runtime.decide(T4, Train(), T5).weight_dtype == "fp32"  # T5 overflows in fp16
    assert runtime.decide(CPU, Train(), LLAMA).weight_dtype == "fp32"
    forced = runtime.decide(CPU, Train(precision="bf16"), LLAMA)
    assert (forced.weight_dtype, forced.compute, forced.device) == ("bf16", "bf16", "cpu")


def test_cpu_bf16_counts_only_when_native(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert runtime.probe().bf16_native is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert runtime.probe().bf16_native is True


def fake_need(sizes):
    """A memory estimate: GB for each (quantization, checkpointing)."""
    return lambda dtype, quant, checkpointing: sizes[(quant, checkpointing)]


@pytest.mark.parametrize(
    "sizes, expected",
    [
        ({("none", False): 30, ("none", True): 20, ("nf4", False): 12, ("nf4", True): 8}, ("none", False)),
        ({("none", False): 90, ("none", True): 60, ("nf4", False): 40, ("nf4", True): 20}, ("none", True)),
        ({("none", False): 190, ("none", True): 160, ("nf4", False): 70, ("nf4", True): 50}, ("nf4", False)),
        ({("none", False): 190, ("none", True): 160, ("nf4", False): 95, ("nf4", True): 50}, ("nf4", True)),
    ],
)
def test_auto_takes_the_fastest_setting_that_fits(sizes, expected):
    decision = runtime.decide(H100, Train(quantization="auto", gradient_checkpointing="auto"), LLAMA, fake_need(sizes))
    assert (decision.quantization, decision.gradient_checkpointing) == expected
    assert "fits 72 GB" in decision.why  # 90 % of the card


def test_fixed_settings_are_not_changed_and_a_cpu_never_quantises_by_itself():
    sizes = {("none", False): 190, ("none", True): 160, ("nf4", False): 95, ("nf4", True): 50}
    fixed = runtime.decide(H100, Train(quantization="none", gradient_checkpointing="auto"), LLAMA, fake_need(sizes))
    assert (fixed.quantization, fixed.gradient_checkpointing) == ("none", True) and "nothing fits" in fixed.why
    cpu = runtime.decide(CPU, Train(quantization="auto", gradient_checkpointing="auto"), LLAMA, fake_need(sizes))
    assert (cpu.quantization, cpu.gradient_checkpointing) == ("none", False)
    with pytest.raises(ValueError, match="causal families only"):
        runtime.decide(CPU, Train(quantization="nf4"), T5)


def test_profiles_validate_the_runtime_keys(tmp_path):
    text = (config.profiles_dir() / "smoke.toml").read_text()
    for bad, message in (
        ('quantization = "int3"', "quantization must be one of"),
        ('gradient_checkpointing = "sometimes"', "gradient_checkpointing must be one of"),
        ('precision = "fp8"', "precision must be one of"),
    ):
        key = bad.split(" = ")[0]
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} ")]
        path = tmp_path / "bad.toml"
        path.write_text("\n".join(lines).replace("[train]", f"[train]\n{bad}"))
        with pytest.raises(config.ConfigError, match=message):
            config.load_profile(str(path))
    assert config.load_profile("gpu").train.gradient_checkpointing == "auto"


SETTINGS = {
    "max_steps": 4,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "auto",
    "seed": 0,
    "log_every": 2,
}
EVAL = {"max_length": 128, "max_loss_rows": 12, "generate_rows": 2, "max_new_tokens": 4, "batch_size": 4, "samples": 1}


def item(name="tiny-llama-x", **train):
    return {
        "name": name,
        "kind": "candidate",
        "train": train,
        "base": {
            "name": "tiny-llama",
            "source": "tiny:llama",
            "family": "llama",
            "max_length": 512,
            "licence": "none",
            "certainty": "confirmed",
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "targets": "attention"},
    }


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    records = instructions.load(str(instructions.BUNDLED)).records[:40]
    return instructions.prepare(
        str(write_jsonl(out / "train.jsonl", records)), None, str(out / "run"), eval_fraction=0.3
    )


def test_bf16_weights_are_loaded_as_bf16(tiny_llama):
    decision = runtime.decide(CPU, Train(precision="bf16"), LLAMA)
    model = loading.load_model(tiny_llama, "llama", decision)
    params = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() * p.element_size() for p in model.parameters()) == 2 * params
    assert loading.attention_of(model) == "sdpa"


def test_evaluation_runs_on_the_training_device_and_dtype_and_bf16_matches_fp32(split, tmp_path):
    scores = {}
    for precision in ("fp32", "bf16"):
        trained = loop.train(
            item(), split, settings_for(item(), {**SETTINGS, "precision": precision}), str(tmp_path / precision)
        )
        metrics = protocol.evaluate(
            item(), trained.result["adapter_uri"], split, settings_for(item(), SETTINGS, EVAL), trained=trained
        )
        assert metrics["runtime"]["evaluated_on"] == trained.result["runtime"]["device"] == "cpu"
        assert metrics["runtime"]["compute"] == trained.result["precision"] == precision
        assert metrics["runtime"]["evaluated_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[precision]
        scores[precision] = metrics["eval_loss"]
    # same seed, same data: bf16 rounding may move the loss, by well under 1 %
    assert scores["bf16"] == pytest.approx(scores["fp32"], rel=0.01)


def test_evaluation_without_a_trained_model_decides_and_loads_as_training_would(split):
    metrics = protocol.evaluate(
        {**item(), "kind": "baseline"}, None, split, settings_for(item(), {**SETTINGS, "precision": "bf16"}, EVAL)
    )
    assert metrics["runtime"]["evaluated_dtype"] == "bfloat16" and metrics["runtime"]["weight_dtype"] == "bf16"


def test_qlora_trains_reloads_and_merges_into_the_16_bit_base(split, tmp_path, fp32_cpu):
    """nf4 base + LoRA on this CPU (bitsandbytes runs NF4 here); the adapter then merges into the plain base."""
    trained = loop.train(
        item("tiny-llama-qlora", quantization="nf4"),
        split,
        settings_for(item("tiny-llama-qlora", quantization="nf4"), SETTINGS),
        str(tmp_path / "out"),
    )
    assert trained.result["runtime"]["quantization"] == "nf4"
    assert any("Linear4bit" in type(m).__name__ for m in trained.model.modules())
    curve = [p["loss"] for p in trained.result["loss_curve"]]
    assert all(torch.isfinite(torch.tensor(curve)))
    adapter = trained.result["adapter_uri"]
    base = item()["base"]
    qlora = item("tiny-llama-qlora", quantization="nf4")
    reloaded = protocol.evaluate(qlora, adapter, split, settings_for(qlora, SETTINGS, EVAL))  # onto a fresh 4-bit base
    assert reloaded["runtime"]["quantization"] == "nf4" and reloaded["eval_loss"] > 0
    difference = bundles.merge_verified(base, adapter, tmp_path / "merged")
    assert difference < 1e-3
    config_json = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config_json.get("dtype", config_json.get("torch_dtype")) == "bfloat16"  # merged weights ship in bf16
    merged = loading.load_model(tmp_path / "merged", "llama")
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_a_wrong_merge_is_refused(split, tmp_path, monkeypatch):
    """The merge check has teeth: an adapter whose merge is skipped disagrees with base + adapter."""
    trained = loop.train(
        item(), split, settings_for(item(), {**SETTINGS, "learning_rate": 5e-2}), str(tmp_path / "out")
    )
    from peft.tuners.lora import LoraModel

    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, *a, **k: self.unload())  # drops the adapter instead
    with pytest.raises(bundles.ReleaseError, match="merged weights disagree"):
        bundles.merge_verified(item()["base"], trained.result["adapter_uri"], tmp_path / "merged")
