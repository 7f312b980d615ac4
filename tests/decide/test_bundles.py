"""Release bundles: adapter + verified merged weights + model card, published to a folder or S3 (never a real hub)."""

import pytest
import yaml
from conftest import finetune, moto_s3, rows, settings_for, write_jsonl

from barbarossa.config import Train
from barbarossa.data import prompts
from barbarossa.decide import bundles

TRAIN = {
    "max_steps": 2,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 5e-2,
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "fp32",
    "seed": 0,
    "log_every": 2,
}


def entry(family: str, tmp_path) -> dict:
    base = {
        "name": f"tiny-{family}",
        "source": f"tiny:{family}",
        "family": family,
        "max_length": 512,
        "licence": "Apache-2.0",
        "certainty": "confirmed",
        "certainty_note": "",
    }
    item = {
        "name": f"tiny-{family}-lora",
        "kind": "candidate",
        "base": base,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},
    }
    summary = {
        "train_uri": str(write_jsonl(tmp_path / "train.jsonl", rows(8))),
        "train_source": "owner/az-alpaca",
        "train_rows": 8,
        "eval_rows": 2,
        "train_fingerprint": "f" * 16,
        "eval_fingerprint": "e" * 16,
    }
    item["settings"] = settings_for(item, TRAIN)
    trained = finetune(item, summary, TRAIN, str(tmp_path / "out"))
    row = {
        "name": item["name"],
        "decision": "release",
        "reasons": ["chrF++ +6.1 over base ✓"],
        "eval_loss": 3.1,
        "base_eval_loss": 3.5,
        "chrf": 20.0,
        "base_chrf": 14.0,
        "bleu": 5.0,
        "fidelity": 0.97,
        "degenerate_rate": 0.1,
        "steps": 2,
        "adapter_uri": trained["adapter_uri"],
    }
    return {"row": row, "item": item, "summary": summary}


def test_model_card_has_hub_metadata_the_prompt_and_the_numbers(tmp_path):
    e = entry("llama", tmp_path)
    e["item"]["base"]["source"] = "hf:TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    card = bundles.model_card(e["row"], e["item"], e["summary"], Train(**TRAIN), "FinetuneFlow/1/release/9")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["language"] == ["az"] and meta["license"] == "apache-2.0" and meta["library_name"] == "peft"
    assert meta["base_model"] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0" and meta["datasets"] == ["owner/az-alpaca"]
    values = {m["name"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values == {"eval_loss": 3.1, "chrf": 20.0, "bleu": 5.0, "fidelity": 0.97}
    assert prompts.render_prompt("Azərbaycanın paytaxtı hansı şəhərdir?") in card  # the exact template
    assert "chrF++ +6.1 over base" in card and "## Limitations" in card and "PeftModel.from_pretrained" in card
    assert (
        "with Barbarossa (run `FinetuneFlow/1/release/9`)" in card and "](http" not in card
    )  # no link to a wrong place


def _independent_merge(base_params: dict, adapter_dir) -> dict:
    """W + (alpha / r) * B @ A for every adapted weight, from the adapter's own files (transposed for Conv1D)."""
    import json

    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert not config.get("use_rslora")
    scale = config["lora_alpha"] / config["r"]
    lora = load_file(adapter_dir / "adapter_model.safetensors")
    merged = {name: p.detach().clone() for name, p in base_params.items()}
    for key in (k for k in lora if k.endswith(".lora_A.weight")):
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        delta = scale * lora[key.replace("lora_A", "lora_B")] @ lora[key]  # (out, in)
        merged[f"{module}.weight"] += delta.T if config["fan_in_fan_out"] else delta  # GPT-2's Conv1D stores (in, out)
    return merged


def _logits(model, tokenizer, seq2seq: bool):
    import torch

    texts = ["Azərbaycanın paytaxtı hansı şəhərdir?", "Bu gün hava günəşlidir, amma sabah yağış yağacaq."]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        if seq2seq:  # several decoder positions, not only the start token
            answer = tokenizer(["Bakı şəhəridir.", "Sabah yağış var."], return_tensors="pt", padding=True).input_ids
            start = torch.full((len(texts), 1), model.config.decoder_start_token_id)
            return model(**batch, decoder_input_ids=torch.cat([start, answer[:, :-1]], dim=1)).logits
        return model(**batch).logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "t5"])  # gpt2: Conv1D (fan_in_fan_out); t5: seq2seq
def test_merged_weights_match_base_plus_adapter_and_reload(family, tmp_path, fp32_cpu):
    """The merged weights written to disk, reloaded with from_pretrained, are base + adapter.

    Checked against the base with the adapter applied by PEFT (logits on the same
    input) and against W + (alpha/r)·BA computed here from the adapter's files
    (every weight); both references start from a freshly loaded base."""
    import torch
    from peft import PeftModel
    from safetensors import safe_open

    from barbarossa.engine import loading

    e = entry(family, tmp_path)
    bundle = bundles.build_bundle(e, e["summary"], "run", str(tmp_path / "release"), merge=True)
    assert bundle["merge_max_logit_diff"] < 1e-3
    folder = tmp_path / "release" / f"tiny-{family}-lora"
    assert {
        "README.md",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "merged/config.json",
        "merged/model.safetensors",
    } <= set(bundle["files"])
    with safe_open(folder / "merged" / "model.safetensors", "pt") as stored:
        # served in bf16 (safe_open handles have keys() but are neither iterable nor containers)
        assert {stored.get_slice(k).get_dtype() for k in stored.keys()} == {"BF16"}  # noqa: SIM118
    reloaded = loading.load_model(folder / "merged", family).eval()  # from_pretrained: a plain model, no peft needed
    assert not any("lora" in name for name, _ in reloaded.named_parameters())

    seq2seq = family == "t5"
    tokenizer, base = loading.load_base(e["item"]["base"])
    tokenizer.padding_side = "left"
    base_params = {name: p.detach().clone() for name, p in base.named_parameters()}
    untuned = _logits(base, tokenizer, seq2seq)
    expected = _logits(PeftModel.from_pretrained(base, str(folder / "adapter")).eval(), tokenizer, seq2seq)
    tolerance = 0.01 * float(expected.abs().max())  # bf16 rounding of the stored weights: ~0.3 % here
    assert float((expected - untuned).abs().max()) > 10 * tolerance  # the adapter matters: a lost merge would show
    assert float((_logits(reloaded, tokenizer, seq2seq) - expected).abs().max()) < tolerance

    want = _independent_merge(base_params, folder / "adapter")
    got = dict(reloaded.named_parameters())
    assert set(got) == set(want)
    changed = [n for n in want if not torch.equal(want[n], base_params[n])]
    assert changed and all(".weight" in n for n in changed)
    for name, weight in want.items():  # equal up to the bf16 rounding of the stored copy (one unit in the last place)
        torch.testing.assert_close(
            got[name].detach(),
            weight.to(torch.bfloat16).float(),
            rtol=2**-7,
            atol=1e-6,
            msg=lambda m, name=name: f"{name}: {m}",
        )


def test_dry_run_names_the_target_and_writes_nothing_there(tmp_path):
    e = entry("llama", tmp_path)
    target = tmp_path / "published"
    [out] = bundles.release_all([e], e["summary"], "run", str(tmp_path / "run"), False, str(target), False)
    assert out["published_to"] is None and out["would_publish_to"] == str(target / "tiny-llama-lora")
    assert not target.exists() and (tmp_path / "run" / "release" / "tiny-llama-lora" / "README.md").exists()


@pytest.mark.server
def test_publish_copies_the_bundle_to_s3(tmp_path, monkeypatch):
    from barbarossa import storage

    e = entry("llama", tmp_path)
    with moto_s3(monkeypatch) as bucket:
        [out] = bundles.release_all([e], e["summary"], "run", str(tmp_path / "run"), False, f"{bucket}/models", True)
        assert out["published_to"] == f"{bucket}/models/tiny-llama-lora"
        assert storage.exists(f"{bucket}/models/tiny-llama-lora/adapter/adapter_model.safetensors")
        assert storage.read_bytes(f"{bucket}/models/tiny-llama-lora/README.md").startswith(b"---\nlibrary_name: peft")


def test_publishing_problems_stop_the_run_before_any_work(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(bundles.ReleaseError, match="HF_TOKEN"):
        bundles.check_target("hf:barbarossa-az", publish=True)
    with pytest.raises(bundles.ReleaseError, match="needs --release-to"):
        bundles.check_target("", publish=True)
    with pytest.raises(bundles.ReleaseError, match="owner only"):
        bundles.check_target("hf:org/repo", publish=False)
    bundles.check_target("hf:barbarossa-az", publish=False)  # a dry run needs no token
