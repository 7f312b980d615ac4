"""Real LoRA training of tiny models of two families: real gradients, real adapters on disk."""

import pytest
import torch

from barbarossa import data, families, models, training
from conftest import write_jsonl

SETTINGS = {"max_steps": 8, "batch_size": 4, "grad_accum": 1, "learning_rate": 1e-2, "warmup_steps": 1,
            "weight_decay": 0.0, "max_grad_norm": 1.0, "max_length": 128, "precision": "auto", "seed": 0,
            "log_every": 4}


def item(family, targets="attention"):
    return {"name": f"tiny-{family}", "kind": "candidate",
            "base": {"name": family, "source": f"tiny:{family}", "family": family, "max_length": 512},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": targets}}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    records = data.load(str(data.BUNDLED)).records[:40]
    return data.prepare(str(write_jsonl(out / "train.jsonl", records)), None, str(out / "run"), eval_fraction=0.2)


@pytest.mark.parametrize("family, targets", [("llama", "attention"), ("gpt2", "attention"), ("llama", "all-linear")])
def test_finetune_lowers_training_loss_and_writes_an_adapter(tmp_path, split, family, targets):
    result = training.finetune(item(family, targets), split, SETTINGS, str(tmp_path / "out"))
    curve = [p["loss"] for p in result["loss_curve"]]
    assert len(curve) == 8 and sum(curve[-2:]) < sum(curve[:2])
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert result["adapter_uri"] == str(adapter) and result["supervised_tokens"] > 0
    assert result["precision"] in ("fp32", "bf16")


def test_gpt2_lora_uses_fan_in_fan_out(tiny_gpt2):
    model = training.lora_model(models.load_model(tiny_gpt2, "gpt2"), "gpt2", item("gpt2")["lora"])
    assert model.peft_config["default"].fan_in_fan_out is True
    assert any("c_attn.lora_A" in name for name, _ in model.named_parameters())


def test_unknown_targets_fail_clearly():
    with pytest.raises(ValueError, match="LoRA targets"):
        families.get_family("llama").lora_targets(42)
    with pytest.raises(ValueError, match="unknown architecture family"):
        families.get_family("deci-ish")


def test_pad_batch_masks_padding():
    batch = training.pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = training.pad_batch([{"input_ids": [5, 6]}, {"input_ids": [8]}], 0, side="left")
    assert left["input_ids"].tolist() == [[5, 6], [0, 8]] and left["attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_learning_rate_warms_up_then_decays():
    rates = [training.lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] > rates[50] > rates[99] >= 0.1


def test_cpu_without_native_bf16_trains_in_fp32(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert training.choose_precision("cpu") == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert training.choose_precision("cpu") == "bf16"
