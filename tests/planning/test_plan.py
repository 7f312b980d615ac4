import dataclasses

import pytest
import torch

from barbarossa import cli, config
from barbarossa.models import families, roster
from barbarossa.planning import plan


def by_name(spec, gpu="A100-80GB", profile="gpu", **train):
    loaded = config.load_profile(profile)
    settings = dataclasses.replace(loaded, train=loaded.train.replace(**train))
    result = plan.build(roster.select(spec), settings, gpu)
    return result, {r["name"]: r for r in result["rows"]}


def test_tokens_and_gpu_hours_follow_the_stated_formulas_and_count_recompute():
    result, rows = by_name("az-tinyllama,az-tulu", max_steps=1000, batch_size=4, grad_accum=2, max_length=256)
    tiny = rows["az-tinyllama"]
    assert tiny["tokens"] == 1000 * 4 * 2 * 256 and tiny["runtime"]["gradient_checkpointing"] is False
    assert tiny["gpu_hours"] == pytest.approx(4 * 1.1e9 * tiny["tokens"] / (312e12 * plan.MFU) / 3600, rel=1e-2)
    assert rows["az-tulu"]["gpu_hours"] > tiny["gpu_hours"] * 10
    assert result["total_tokens"] == 2 * tiny["tokens"] and "MFU" in result["assumptions"]
    _, l4 = by_name("az-llama2", gpu="L4")  # 7B on a 24 GB card: the trainer checkpoints, the forward runs twice
    row = l4["az-llama2"]
    assert row["runtime"]["gradient_checkpointing"] is True and row["fits"] == "LoRA + checkpointing"
    assert row["gpu_hours"] == pytest.approx(6 * 6.7e9 * row["tokens"] / (121e12 * plan.MFU) / 3600, rel=1e-2)


def test_memory_grows_with_size_and_qlora_saves_most_of_it():
    _, rows = by_name("az-vicgalle-gpt2,az-llama2,az-galpaca")
    small, mid, large = rows["az-vicgalle-gpt2"], rows["az-llama2"], rows["az-galpaca"]
    assert small["lora_gb"] < mid["lora_gb"] < large["lora_gb"]
    assert large["qlora_gb"] < large["lora_gb"] / 3
    assert 13.4 < mid["planned_gb"] < 40  # 6.7B in bf16 is 13.4 GB of weights before activations


def test_the_plan_says_what_the_trainer_will_do_on_the_box():
    _, rows = by_name("az-galpaca,az-llama2,az-bloom", gpu="T4")  # 16 GB, no native bf16: fp16
    assert rows["az-galpaca"]["fits"] == "no"
    assert (
        rows["az-llama2"]["fits"] == "QLoRA + checkpointing" and rows["az-llama2"]["runtime"]["quantization"] == "nf4"
    )
    assert rows["az-bloom"]["fits"] == "LoRA" and rows["az-bloom"]["runtime"]["weight_dtype"] == "fp16"
    result, rows = by_name("az-galpaca,az-llama2", gpu="T4", profile="cpu")  # a profile that never quantises
    assert rows["az-llama2"]["fits"] == "no" and result["not_fitting"] == ["az-galpaca", "az-llama2"]
    reasons = plan.refusals(result)
    assert reasons["az-llama2"].startswith("does not fit the T4 box (16 GB)")
    for row in by_name("seed", gpu="A100-80GB")[0]["rows"]:  # never 'fits' with a setting the runtime would not take
        assert row["fits"] == "no" or row["planned_gb"] <= 80 * 0.9
        label = ("QLoRA" if row["runtime"]["quantization"] == "nf4" else "LoRA") + (
            " + checkpointing" if row["runtime"]["gradient_checkpointing"] else ""
        )
        assert row["fits"] in ("no", label)


def test_unknown_gpu_is_refused():
    with pytest.raises(ValueError, match="unknown GPU 'TPU'"):
        by_name("az-bloom", gpu="TPU")


def test_plan_command_prints_a_table(capsys):
    assert cli.main(["plan", "--models", "seed+family:gpt2", "--gpu", "L4"]) == 0
    out = capsys.readouterr().out
    assert "Plan on L4" in out and "az-cerebras" in out and "GPU-hours" in out and "planned GB" in out


def saved_bytes_per_token(family: str, length: int = 128, batch: int = 2) -> tuple[float, plan.Shape]:
    """What autograd really keeps for a LoRA forward in bf16, per token (parameters excluded)."""
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    hidden, layers, heads, vocab = 256, 2, 4, 512
    configs = {
        "llama": lambda: tf.LlamaConfig(
            hidden_size=hidden,
            intermediate_size=688,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            vocab_size=vocab,
        ),
        "opt": lambda: tf.OPTConfig(
            hidden_size=hidden,
            ffn_dim=4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            vocab_size=vocab,
            word_embed_proj_dim=hidden,
        ),
        "bloom": lambda: tf.BloomConfig(hidden_size=hidden, n_layer=layers, n_head=heads, vocab_size=vocab),
    }
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(configs[family](), dtype=torch.bfloat16)
    targets = list(families.get_family(family).attention_targets)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0))
    params = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def keep(tensor):
        if tensor.data_ptr() and tensor.data_ptr() not in params:
            seen[(tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(
            input_ids=torch.randint(0, vocab, (batch, length)),
            use_cache=False,
            logits_to_keep=torch.empty(0, dtype=torch.long),
        )
    return sum(seen.values()) / (batch * length), plan.Shape(0, layers, hidden, heads, vocab, 4 * hidden)


@pytest.mark.parametrize("family", ["llama", "opt", "bloom"])
def test_activation_bytes_of_the_plan_match_what_autograd_keeps(family):
    """The plan's per-family activation factors, re-measured on this CPU.

    The factors are CUDA's (`make gpu-check` put the plan within 5 % of the
    measured peak for 135M–7B LLaMA shapes); this CPU's sdpa kernel keeps more
    per layer than CUDA's fused kernels (up to ~25 %), eager attention the
    same. So: never above what is kept here by more than 15 %, never below by more than 30 %.
    """
    measured, shape = saved_bytes_per_token(family)
    planned = plan.activation_bytes_per_token(shape, family, "attention", 0.0, 128, checkpointing=False)
    assert 0.70 <= planned / measured <= 1.15
