"""The step's speed levers: chosen by the runtime decision, recorded when not taken, and exact where they run here."""

import pytest
import torch
from conftest import settings_for, write_jsonl
from transformers import AutoModelForCausalLM

from barbarossa import config
from barbarossa.config import Train
from barbarossa.data import instructions, prompts
from barbarossa.engine import kernels, levers, loading, losses, runtime
from barbarossa.train import loop

H100 = runtime.Hardware("cuda", "H100", 80.0, True)
CPU = runtime.Hardware("cpu", "cpu", 24.0, False)
LLAMA = {"name": "x", "family": "llama"}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "attention"}
VERIFIED = frozenset(
    levers.CHECKED
)  # a GPU where a kept gpu-check report passed every lever (tests/engine/test_levers.py)


def test_on_a_verified_gpu_auto_takes_every_lever_the_family_and_the_installed_packages_allow(monkeypatch):
    monkeypatch.setattr(runtime, "installed", lambda module: False)
    plain = runtime.decide(H100, Train(), LLAMA, verified=VERIFIED)
    assert (plain.adapter_dtype, plain.master_weights, plain.compiled) == ("bf16", True, True)
    assert plain.attention == "flex_attention" and plain.kernels == "torch"
    assert plain.not_taken == {"kernels": "liger-kernel is not installed"}
    monkeypatch.setattr(runtime, "installed", lambda module: True)
    full = runtime.decide(H100, Train(), LLAMA, verified=VERIFIED)
    assert (full.attention, full.kernels, full.not_taken) == ("flash_attention_2", "liger", {})
    opt = runtime.decide(H100, Train(), {"name": "o", "family": "opt"}, verified=VERIFIED)  # pads: no packed rows
    assert (opt.attention, opt.kernels) == ("sdpa", "torch") and "no kernels for opt" in opt.not_taken["kernels"]
    gpt2 = runtime.decide(H100, Train(), {"name": "g", "family": "gpt2"}, verified=VERIFIED)
    assert gpt2.attention == "flash_attention_2"


def test_fp16_qlora_and_remote_code_keep_the_proven_path_and_say_why(monkeypatch):
    monkeypatch.setattr(runtime, "installed", lambda module: False)
    t4 = runtime.decide(runtime.Hardware("cuda", "T4", 16.0, False), Train(), LLAMA, verified=VERIFIED)
    assert t4.adapter_dtype == "fp32" and "loss scaling" in t4.not_taken["adapter_dtype"]
    qlora = runtime.decide(H100, Train(quantization="nf4"), LLAMA, verified=VERIFIED)
    assert (qlora.adapter_dtype, qlora.compiled) == ("fp32", False)
    assert "k-bit" in qlora.not_taken["adapter_dtype"] and "4-bit" in qlora.not_taken["compile"]
    deci = runtime.decide(H100, Train(), {"name": "d", "family": "deci"}, verified=VERIFIED)
    assert deci.compiled is False and "hub's own code" in deci.not_taken["compile"]


def test_a_cpu_takes_none_of_the_cuda_levers_and_records_each_as_not_taken():
    decision = runtime.decide(CPU, Train(), LLAMA)
    assert (decision.compiled, decision.kernels, decision.attention, decision.master_weights) == (
        False,
        "torch",
        "sdpa",
        False,
    )
    assert set(decision.not_taken) == {"compile", "kernels", "attention"}
    assert "CUDA only" in decision.not_taken["kernels"] and "no backward on a CPU" in decision.not_taken["attention"]
    assert decision.as_dict()["not_taken"] == decision.not_taken  # in the leaderboard row
    forced = runtime.decide(CPU, Train(compile=True, precision="bf16"), LLAMA)
    assert forced.compiled and forced.master_weights and "compile" not in forced.not_taken
    with pytest.raises(ValueError, match="cannot run here: Liger's kernels are Triton: CUDA only"):
        runtime.decide(CPU, Train(kernels="liger"), LLAMA)
    with pytest.raises(ValueError, match="attention must be one of"):
        runtime.decide(CPU, Train(attention="paged"), LLAMA)


def test_a_profile_names_the_file_and_key_of_a_bad_lever(tmp_path):
    text = (config.profiles_dir() / "smoke.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[train]\n", '[train]\ncompile = "sometimes"\n'))
    with pytest.raises(config.ConfigError, match=r"bad.toml: \[train\] compile must be one of true, false, \"auto\""):
        config.load_profile(str(bad))
    assert config.load_profile("smoke").train.kernels == "auto"


def test_packed_rows_of_a_varlen_kernel_are_one_row_padded_to_the_bucket():
    flex = runtime.decide(H100, Train(), LLAMA, verified=VERIFIED)
    assert loop.packing_of(flex, 512) == {"row_tokens": None, "bucket": kernels.BUCKET}
    assert loop.packing_of(runtime.decide(CPU, Train(), LLAMA), 512) == {"row_tokens": 512, "bucket": 0}
    examples = [{"input_ids": list(range(1, n + 1)), "labels": [-100] * 3 + list(range(4, n + 1))} for n in (50, 90)]
    batch = loop.pack_batch(examples, None, pad_id=0, bucket=128)
    assert batch["input_ids"].shape == (1, 256)
    assert (batch["labels"][0, 140:] == prompts.IGNORE_INDEX).all() and (batch["input_ids"][0, 140:] == 0).all()
    assert batch["position_ids"][0, 140] == 0  # the padding is a document of its own: nothing attends across


@pytest.fixture(scope="module")
def examples(tiny_llama):
    tokenizer = loading.load_tokenizer(tiny_llama)
    records = instructions.load("bundled").records[:12]
    return tokenizer, [e for e in (prompts.build_example(tokenizer, r, 256) for r in records) if e][:6]


def lora_llama(folder, attention="sdpa"):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=torch.float32)
    model = loop.lora_model(model, "llama", LORA)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give A a gradient too
            torch.nn.init.normal_(p, std=0.02)
    return model


@pytest.mark.compile
def test_compiling_after_metaflow_s_vendored_typing_extensions_still_imports_inductor():
    """A flow task has Metaflow's own typing_extensions loaded after torch: compiling must still work there."""
    import subprocess
    import sys

    script = (
        "import torch, metaflow._vendor.typing_extensions\n"
        "from barbarossa.engine import kernels\n"
        "kernels._site_typing_extensions()\n"
        "import torch._inductor.compile_fx\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    unfixed = subprocess.run(
        [sys.executable, "-c", script.replace("kernels._site_typing_extensions()", "pass")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "follows type parameter with a default" in unfixed.stderr  # the failure this guards against, still real


@pytest.mark.compile
def test_compiled_decoder_layers_give_the_eager_loss_and_gradients(tiny_llama, examples):
    tokenizer, found = examples
    grads = {}
    for mode in ("eager", "compiled"):
        model = lora_llama(tiny_llama)
        if mode == "compiled":
            assert kernels.compile_layers(model) == 2
        grads[mode] = []
        for batch_examples in (found, found[1:]):  # two packed shapes, bucketed to the same width
            batch = loop.make_batch(
                "packed",
                batch_examples,
                256,
                tokenizer.pad_token_id,
                "cpu",
                packing={"row_tokens": None, "bucket": kernels.BUCKET},
            )
            loss = losses.packed_token_losses(model, batch).mean()
            loss.backward()
            grads[mode].append(
                (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
            )
            model.zero_grad()
    for (eager_loss, eager), (compiled_loss, compiled) in zip(grads["eager"], grads["compiled"]):
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
        for name, grad in eager.items():
            assert torch.allclose(compiled[name], grad, rtol=1e-4, atol=1e-6), name
    with kernels.evaluating(model):  # dev checks run eager
        assert all(getattr(layer, "_compiled_call_impl", None) is None for layer in kernels.decoder_layers(model))
    assert all(layer._compiled_call_impl is not None for layer in kernels.decoder_layers(model))


def test_flex_attention_keeps_packed_examples_apart_without_a_dense_mask(tiny_llama, examples):
    """FlexAttention has no backward on a CPU: its forward, one long packed row against each example alone."""
    tokenizer, found = examples
    model = lora_llama(tiny_llama, "flex_attention")
    assert loading.attention_of(model) == "flex_attention"
    with torch.no_grad():
        batch = loop.make_batch(
            "packed", found, 256, tokenizer.pad_token_id, "cpu", packing={"row_tokens": None, "bucket": kernels.BUCKET}
        )
        assert batch["input_ids"].shape[0] == 1
        packed = losses.packed_token_losses(model, batch)
        with kernels.evaluating(model):
            assert loading.attention_of(kernels.base_of(model)) == "sdpa"
            alone = torch.cat(
                [losses.padded_token_losses(model, prompts.pad_batch([e], tokenizer.pad_token_id)) for e in found]
            )
        assert loading.attention_of(kernels.base_of(model)) == "flex_attention"
    assert torch.allclose(packed, alone, atol=1e-4)
    kernels.for_evaluation(model)
    assert loading.attention_of(kernels.base_of(model)) == "sdpa"


@pytest.mark.compile
def test_a_forced_compile_trains_as_eager_does_and_the_row_records_it(tmp_path, tiny_llama):
    rows = instructions.load("bundled").records[:24]
    split = {"train_uri": str(write_jsonl(tmp_path / "train.jsonl", rows)), "train_fingerprint": "kernels-test"}
    settings = {
        "max_steps": 3,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_length": 128,
        "precision": "fp32",
        "seed": 0,
        "log_every": 1,
        "share_prefix": False,
    }
    item = {
        "name": "tiny-llama-lora",
        "kind": "candidate",
        "lora": LORA,
        "base": {"name": "tiny-llama", "source": "tiny:llama", "family": "llama", "max_length": 2048},
    }
    curves = {}
    for compiled in (False, True):
        trained = loop.train(
            item, split, settings_for(item, {**settings, "compile": compiled}), str(tmp_path / f"out-{compiled}")
        )
        result = trained.result
        assert result["runtime"]["compiled"] is compiled and result["compiled_layers"] == (2 if compiled else 0)
        assert ("compile" in result["runtime"]["not_taken"]) is False
        curves[compiled] = [point["loss"] for point in result["loss_curve"]]
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)
