import pytest

from barbarossa import cli, config, plan, registry


def by_name(spec, gpu="A100-80GB", **train):
    profile = config.load_profile("gpu")["train"] | train
    result = plan.build(registry.select(spec), profile, gpu)
    return result, {r["name"]: r for r in result["rows"]}


def test_tokens_and_gpu_hours_follow_the_stated_formulas():
    result, rows = by_name("az-tinyllama,az-tulu", max_steps=1000, batch_size=4, grad_accum=2, max_length=256)
    tiny = rows["az-tinyllama"]
    assert tiny["tokens"] == 1000 * 4 * 2 * 256
    assert tiny["gpu_hours"] == pytest.approx(4 * 1.1e9 * tiny["tokens"] / (312e12 * plan.MFU) / 3600, rel=1e-2)
    assert rows["az-tulu"]["gpu_hours"] > tiny["gpu_hours"] * 10
    assert result["total_tokens"] == 2 * tiny["tokens"] and "MFU" in result["assumptions"]


def test_memory_grows_with_size_and_qlora_saves_most_of_it():
    _, rows = by_name("az-vicgalle-gpt2,az-llama2,az-galpaca")
    small, mid, large = rows["az-vicgalle-gpt2"], rows["az-llama2"], rows["az-galpaca"]
    assert small["lora_gb"] < mid["lora_gb"] < large["lora_gb"]
    assert large["qlora_gb"] < large["lora_gb"] / 2
    assert 14 < mid["lora_gb"] < 24  # 6.7B in bf16 is 13.4 GB of weights before activations


def test_fit_is_judged_against_the_smaller_of_declared_and_real_gpu_memory():
    _, rows = by_name("az-galpaca,az-llama2,az-bloom", gpu="T4")
    assert rows["az-galpaca"]["fits"] == "no"
    assert rows["az-llama2"]["fits"] == "QLoRA only"
    assert rows["az-bloom"]["fits"] == "LoRA"
    result, _ = by_name("az-galpaca,az-bloom", gpu="T4")
    assert result["not_fitting"] == ["az-galpaca"]


def test_unknown_gpu_is_refused():
    with pytest.raises(ValueError, match="unknown GPU 'TPU'"):
        by_name("az-bloom", gpu="TPU")


def test_plan_command_prints_a_table(capsys):
    assert cli.main(["plan", "--models", "seed+family:gpt2", "--gpu", "L4"]) == 0
    out = capsys.readouterr().out
    assert "Plan on L4" in out and "az-cerebras" in out and "GPU-hours" in out
