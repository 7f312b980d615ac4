"""Release bundles for the models the leaderboard selected: adapter, optional merged weights, model card.

A bundle is always written under the run's output root (`<run>/release/<name>/`),
so a dry run leaves something to inspect. Publishing copies it to a target —
a local folder, an `s3://` prefix, or `hf:<owner>` (one Hub repo per model,
`<owner>/<name>`) — and only happens with `--publish`. The Hub token is read
from the environment (`HF_TOKEN`, which Metaflow `@secrets` can set) at the
moment of upload and is never stored.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from barbarossa import languages, storage
from barbarossa.config import Train
from barbarossa.data import prompts
from barbarossa.engine import loading
from barbarossa.models.families import get_family

VERIFY_PROMPTS = [
    {"instruction": "Azərbaycanın paytaxtı hansı şəhərdir?", "input": ""},
    {"instruction": "Bu cümləni ingilis dilinə tərcümə edin.", "input": "Bu gün hava günəşlidir."},
    {"instruction": "Sağlam qidalanma üçün üç məsləhət verin.", "input": ""},
]
HUB_LICENCES = {
    "apache-2.0",
    "mit",
    "cc-by-sa-3.0",
    "cc-by-nc-4.0",
    "cc-by-sa-4.0",
    "openrail",
    "bigscience-openrail-m",
}


class ReleaseError(RuntimeError):
    """Publishing cannot proceed (bad target, missing token, failed verification)."""


def selected(rows: list[dict], results: list[dict]) -> list[dict]:
    """[{row, item}] for every candidate the policy released (small: no weights, no data)."""
    items = {r["item"]["name"]: r["item"] for r in results}
    return [{"row": row, "item": items[row["name"]]} for row in rows if row["decision"] == "release"]


def check_target(target: str, publish: bool) -> None:
    """Fail before any work when publishing would fail (called in `start`)."""
    if not target:
        if publish:
            raise ReleaseError("--publish needs --release-to (a folder, an s3:// prefix or hf:<owner>)")
        return
    if target.startswith("hf:"):
        if not target[3:] or "/" in target[3:]:
            raise ReleaseError(
                f"--release-to {target!r}: give the Hub owner only (hf:<owner>); repos are <owner>/<model>"
            )
        if publish and not os.environ.get("HF_TOKEN"):
            raise ReleaseError("publishing to the Hugging Face Hub needs HF_TOKEN in the environment (or via @secrets)")


def _front_matter(row: dict, item: dict, data_summary: dict) -> str:
    base = item["base"]
    licence = base["licence"].lower() if base["licence"].lower() in HUB_LICENCES else None
    language = languages.of_run(data_summary)
    seq2seq = get_family(base["family"]).task == "seq2seq"
    lines = [
        "---",
        "library_name: peft",
        "language:",
        f"- {language['code']}",
        f"pipeline_tag: {'text2text-generation' if seq2seq else 'text-generation'}",
        "tags:",
        "- barbarossa",
        "- lora",
        f"- {language['name'].lower()}",
        "- alpaca",
    ]
    if base["source"].startswith("hf:"):
        lines.append(f"base_model: {base['source'][3:]}")
    lines += [f"license: {licence}"] if licence else ["license: other", f'license_name: "{base["licence"]}"']
    source = data_summary.get("train_source", "")
    if (
        source
        and "/" in source
        and not any(source.endswith(s) for s in (".jsonl", ".json", ".csv", ".parquet"))
        and not storage.is_s3(source)
    ):
        lines += ["datasets:", f"- {source.split(':')[0]}"]
    lines += [
        "model-index:",
        f"- name: {row['name']}",
        "  results:",
        "  - task:",
        "      type: text-generation",
        "    dataset:",
        f"      name: held-out {language['name']} instructions",
        "      type: barbarossa-eval",
        "    metrics:",
    ]
    for key, kind in (("eval_loss", "loss"), ("chrf", "chrf"), ("bleu", "bleu"), ("fidelity", "accuracy")):
        if row.get(key) is not None:
            lines += [f"    - type: {kind}", f"      name: {key}", f"      value: {row[key]}"]
    return "\n".join(lines + ["---", ""])


def _benchmark_note(row: dict) -> str:
    """What the card says of independent benchmarks: the ones scored, or that there were none."""
    names = ", ".join(sorted(row.get("benchmarks") or {}))
    return (
        f" and the benchmarks {names} (see the run's leaderboard)" if names else ", not from an independent benchmark"
    )


def model_card(row: dict, item: dict, data_summary: dict, train_cfg: Train, run: str) -> str:
    """README.md with Hugging Face YAML metadata: what it is, how it was measured, how to use it, what it is not."""
    base, lora = item["base"], item["lora"] or {}
    language = languages.of_run(data_summary)
    template = prompts.template_of(language)
    example = template.render(language["example"])
    auto = "AutoModelForSeq2SeqLM" if get_family(base["family"]).task == "seq2seq" else "AutoModelForCausalLM"
    base_id = base["source"][3:] if base["source"].startswith("hf:") else "<folder with the base model>"
    train_source = data_summary.get("train_source")
    metric_lines = [
        f"| {label} | {row.get('base_' + key, '–')} | {row.get(key)} |"
        for key, label in (
            ("eval_loss", "held-out loss"),
            ("chrf", "chrF++"),
            ("bleu", "BLEU"),
            ("fidelity", f"{language['name']} answers"),
            ("degenerate_rate", "degenerate answers"),
        )
    ]
    return f"""{_front_matter(row, item, data_summary)}
# {row["name"]}

A LoRA adapter for **{base["name"]}** (`{base["source"]}`, {base["family"]} family; base id certainty:
**{base["certainty"]}**{" — " + base["certainty_note"] if base.get("certainty_note") else ""}) fine-tuned on
{language["name"]} instructions with Barbarossa (run `{run}`).

## Prompt

Train, evaluation and this card use one template (`barbarossa.data.prompts.render_prompt`):

```
{example}```

With an input, the preamble mentions it and a `{template.input_header}` section precedes `{template.response_header}`.

## Usage

```python
from peft import PeftModel
from transformers import {auto}, AutoTokenizer

base = {auto}.from_pretrained("{base_id}")
model = PeftModel.from_pretrained(base, "<this folder or repo>")
tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")
prompt = {example!r}
out = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=128)
print(tokenizer.decode(out[0], skip_special_tokens=True))
```

## Evaluation

Held-out split of the training data ({data_summary.get("eval_rows")} rows, fingerprint
`{data_summary.get("eval_fingerprint")}`), greedy decoding, same protocol for the untuned base:

| metric | base | this model |
|---|---|---|
{chr(10).join(metric_lines)}

Release decision: **{row["decision"]}** — {"; ".join(row.get("reasons") or [])}

## Training

LoRA r={lora.get("r")}, α={lora.get("alpha")}, dropout {lora.get("dropout")}, targets {lora.get("targets")};
{row.get("steps")} steps, batch {train_cfg.batch_size} × {train_cfg.grad_accum}, learning rate
{train_cfg.learning_rate}, max length {train_cfg.max_length}. Training data: `{train_source}`
({data_summary.get("train_rows")} rows, fingerprint `{data_summary.get("train_fingerprint")}`).

## Limitations

- The training data is Alpaca-style instructions in {language["name"]}; where it was machine-translated from
  English it carries translation errors and English-centric content.
- Metrics come from a small held-out split of the same data{_benchmark_note(row)}.
- Licence: the base model's ({base["licence"]}); check it before use.
"""


def _logits(model, tokenizer, seq2seq: bool):
    import torch

    texts = [prompts.render_prompt(p["instruction"], p["input"]) for p in VERIFY_PROMPTS]
    batch = tokenizer(texts, return_tensors="pt", padding=True).to(next(model.parameters()).device)
    with torch.no_grad():
        if seq2seq:
            start = torch.full((len(texts), 1), model.config.decoder_start_token_id, device=batch["input_ids"].device)
            return model(**batch, decoder_input_ids=start).logits.float()
        return model(**batch).logits.float()


def merge_runtime(base: dict):
    """How a release merges: the task's hardware and precision rule, never 4-bit.

    A QLoRA adapter was trained on the 4-bit base; it is merged into the 16-bit
    base (the weights people will load), and verified against that same base
    with the adapter applied — like any other adapter.
    """
    from barbarossa.engine import runtime

    return runtime.decide(runtime.probe(), Train(precision="auto", quantization="none"), base)


def merge_tolerance(dtype: str, expected) -> float:
    """max |Δlogit| a correct merge may show: 1e-3 in fp32; in 16-bit, 5 % of the largest logit (rounding of W + BA)."""
    return 1e-3 if dtype == "fp32" else 0.05 * float(expected.abs().max())


def merge_verified(base: dict, adapter_dir: Path, out: Path) -> float:
    """Merge the adapter into the base, check merged and adapter+base agree on a few prompts; max |Δlogit|.

    The merge runs on the release box's device in its precision (a GPU in bf16
    for 7–30B models: fp32 would not fit the box); the merged weights are
    saved in bf16 either way, the dtype the models are served in.
    """
    import torch
    from peft import PeftModel

    decision = merge_runtime(base)
    tokenizer, model = loading.load_base(base, decision)
    tokenizer.padding_side = "left"
    seq2seq = get_family(base["family"]).task == "seq2seq"
    with_adapter = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    expected = _logits(with_adapter, tokenizer, seq2seq)
    merged = with_adapter.merge_and_unload()
    difference = float((_logits(merged, tokenizer, seq2seq) - expected).abs().max())
    tolerance = merge_tolerance(decision.weight_dtype, expected)
    if difference > tolerance:
        raise ReleaseError(
            f"{base['name']}: merged weights disagree with base + adapter "
            f"(max |Δlogit| {difference:.2e} > {tolerance:.1e}, {decision.weight_dtype})"
        )
    merged.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return difference


def build_bundle(entry: dict, data_summary: dict, run: str, dest_uri: str, merge: bool) -> dict:
    """Write one model's bundle (adapter/, merged/ if asked, README.md) under `dest_uri`; a small summary back.

    The model card states the settings the candidate trained with (its item's resolved settings)."""
    row, item = entry["row"], entry["item"]
    train_cfg = item["settings"].train
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / row["name"]
        shutil.copytree(storage.local_dir(row["adapter_uri"], Path(tmp) / "download"), bundle / "adapter")
        loading.load_base_tokenizer(item["base"]).save_pretrained(bundle / "adapter")
        difference = merge_verified(item["base"], bundle / "adapter", bundle / "merged") if merge else None
        (bundle / "README.md").write_text(model_card(row, item, data_summary, train_cfg, run), encoding="utf-8")
        files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
        uri = storage.upload_dir(bundle, storage.join(dest_uri, row["name"]))
    return {
        "name": row["name"],
        "bundle_uri": uri,
        "files": files,
        "bytes": size,
        "merged": merge,
        "merge_max_logit_diff": difference,
        "merge_dtype": merge_runtime(item["base"]).weight_dtype if merge else None,
    }


def publish_bundle(bundle: dict, target: str, dry_run: bool) -> dict:
    """Copy a bundle to the target (or say where it would go); returns where it went."""
    if target.startswith("hf:"):
        destination = f"https://huggingface.co/{target[3:]}/{bundle['name']}"
        bundle = {**bundle, "hub_token": "found" if os.environ.get("HF_TOKEN") else "missing"}  # never the token itself
    else:
        destination = storage.join(target if storage.is_s3(target) else os.path.abspath(target), bundle["name"])
    if dry_run:
        return {**bundle, "published_to": None, "would_publish_to": destination}
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.local_dir(bundle["bundle_uri"], Path(tmp))
        if target.startswith("hf:"):
            from huggingface_hub import HfApi

            api = HfApi(token=os.environ["HF_TOKEN"])
            repo = f"{target[3:]}/{bundle['name']}"
            api.create_repo(repo, exist_ok=True)
            api.upload_folder(folder_path=str(local), repo_id=repo, commit_message="Barbarossa release")
        else:
            storage.upload_dir(local, destination)
    return {**bundle, "published_to": destination, "would_publish_to": None}


def release_all(
    entries: list[dict],
    data_summary: dict,
    run: str,
    run_root: str,
    merge: bool,
    target: str,
    publish: bool,
) -> list[dict]:
    """Bundle every selected model under `<run_root>/release/`, then publish (or dry-run) to `target`."""
    released = []
    for entry in entries:
        bundle = build_bundle(entry, data_summary, run, storage.join(run_root, "release"), merge)
        released.append(
            publish_bundle(bundle, target, dry_run=not publish)
            if target
            else {**bundle, "published_to": None, "would_publish_to": None}
        )
    return released
