"""LoRA fine-tuning of one candidate: a small, explicit PyTorch loop.

Features and their trade-offs:
- shared prompt prefixes (`sharing.py`, causal families): the preamble that
  opens every Alpaca prompt runs once per batch instead of once per example,
  through the model's KV cache — about 30 % fewer positions on this data, the
  same loss and gradients;
- padding-free packing where a prefix cannot be shared (gradient
  checkpointing drops the cache): examples packed into rows whose position ids
  restart at 0, so attention stays inside each example (transformers'
  `DataCollatorWithFlattening`; families without position-id masks — OPT,
  BLOOM, MPT, T5 — pad to the longest example instead);
- response-only loss, and logits are computed only where a response token
  follows (`logits_to_keep`): the vocabulary projection of prompt tokens is
  skipped, not masked after the fact;
- bf16 autocast where the hardware runs bf16 natively, fp32 otherwise;
- AdamW, linear warm-up + cosine decay, gradient clipping and accumulation,
  optional gradient checkpointing (less memory, more compute);
- resumable checkpoints every N steps (`checkpoints.py`): a retried task
  continues from the last one instead of step 0;
- a guard that stops a diverging run with the step and the reason.
The adapter is written as files; the caller gets back a small dict.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

from barbarossa import checkpoints, data, models, prompts, sharing, storage
from barbarossa.console import log
from barbarossa.families import get_family


class TrainingDiverged(RuntimeError):
    """Loss became NaN/inf; the message names the step."""


def choose_precision(device: str) -> str:
    """bf16 where the hardware runs it natively, else fp32.

    CPUs without AMX / AVX512-BF16 emulate bf16 hundreds of times slower than
    fp32, so CPU autocast is only used where those instructions exist.
    """
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    cpu = torch.cpu
    native = any(getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    return "bf16" if native else "fp32"


def lora_model(model, family: str, recipe: dict):
    from peft import LoraConfig, TaskType, get_peft_model

    spec = get_family(family)
    targets = recipe["targets"]
    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if spec.task == "seq2seq" else TaskType.CAUSAL_LM,
        r=recipe["r"],
        lora_alpha=recipe["alpha"],
        lora_dropout=recipe["dropout"],
        target_modules=spec.lora_targets(list(targets) if isinstance(targets, (list, tuple)) else targets),
        fan_in_fan_out=spec.fan_in_fan_out,
        bias="none",
    )
    return get_peft_model(model, config)


def pad_batch(examples: list[dict], pad_id: int, side: str = "right") -> dict:
    """Tensors for a batch padded to its longest example; pad labels are ignored.

    Inputs and labels are padded separately: the same length for a causal LM,
    the decoder side's own length for seq2seq.
    """
    import torch

    ids = [e["input_ids"] for e in examples]
    batch = {
        "input_ids": torch.tensor(prompts.pad_rows(ids, pad_id, side)),
        "attention_mask": torch.tensor(prompts.pad_rows([[1] * len(r) for r in ids], 0, side)),
    }
    if all("labels" in e for e in examples):
        batch["labels"] = torch.tensor(prompts.pad_rows([e["labels"] for e in examples], prompts.IGNORE_INDEX, side))
    return batch


def pack_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """Example indices grouped into rows of at most `row_tokens` tokens (first fit, longest first).

    Rows, not one long row: on hardware without a variable-length attention
    kernel, attention over one row costs its length squared.
    """
    rows, room = [], []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((r for r, free in enumerate(room) if free >= lengths[index]), None)
        if slot is None:
            rows.append([]), room.append(row_tokens)
            slot = len(rows) - 1
        rows[slot].append(index)
        room[slot] -= lengths[index]
    return rows


def pack_batch(examples: list[dict], row_tokens: int | None = None, pad_id: int = 0) -> dict:
    """Examples packed into rows (one row when `row_tokens` is None) whose position ids restart at 0 per example.

    Each row is flattened by transformers' `DataCollatorWithFlattening`; rows are
    then padded to the longest row (padding sits after every example, with
    ignored labels, so causal attention never reaches it).
    """
    import torch
    from transformers import DataCollatorWithFlattening

    flatten = DataCollatorWithFlattening(separator_id=prompts.IGNORE_INDEX)
    groups = pack_rows([len(e["input_ids"]) for e in examples], row_tokens) if row_tokens else [range(len(examples))]
    rows = [flatten([{"input_ids": examples[i]["input_ids"], "labels": examples[i]["labels"]} for i in group],
                    return_tensors="np") for group in groups]
    width = max(row["input_ids"].shape[1] for row in rows)

    def stacked(key, pad):
        return torch.tensor([list(row[key][0]) + [pad] * (width - row[key].shape[1]) for row in rows])

    return {"input_ids": stacked("input_ids", pad_id), "labels": stacked("labels", prompts.IGNORE_INDEX),
            "position_ids": torch.tensor([list(row["position_ids"][0]) + list(range(width - row["position_ids"].shape[1]))
                                          for row in rows])}


def packed_token_losses(model, batch: dict):
    """Per-token cross-entropy of packed rows, projecting to the vocabulary only where a supervised token follows."""
    import torch

    labels = batch["labels"]
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                output_hidden_states=True, logits_to_keep=torch.empty(0, dtype=torch.long, device=labels.device))
    return sharing.response_token_losses(model, out.hidden_states[-1], labels)


def choose_layout(family, cfg: dict) -> str:
    """The cheapest batch layout this family and these settings allow."""
    if family.task != "causal":
        return "padded"
    if family.shares_prefix and cfg.get("share_prefix", True) and not cfg.get("gradient_checkpointing"):
        return "shared-prefix"
    return "packed" if family.packs and cfg.get("packing", True) else "padded"


def make_batch(layout: str, examples: list[dict], max_length: int, pad_id: int, device: str) -> dict:
    """The examples in the given layout, ready for `batch_loss` on `device`."""
    if layout == "shared-prefix":
        return sharing.shared_prefix_batch(examples, pad_id)
    batch = pack_batch(examples, max_length, pad_id) if layout == "packed" else pad_batch(examples, pad_id)
    return {k: v.to(device) for k, v in batch.items()}


def computed_positions(batch: dict) -> int:
    """Token positions the model runs for this batch, padding included."""
    return batch["computed"] if "prefixes" in batch else batch["input_ids"].numel()


def batch_loss(model, batch: dict):
    """Mean loss over the batch's supervised tokens, whichever layout the batch has."""
    if "prefixes" in batch:
        return sharing.shared_prefix_losses(model, batch).mean()
    if "position_ids" in batch:
        return packed_token_losses(model, batch).mean()
    return model(**batch).loss


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def tokenize(tokenizer, records: list[dict], max_length: int, task: str = "causal") -> tuple[list[dict], int]:
    built = [prompts.build_example(tokenizer, r, max_length, task=task) for r in records]
    kept = [b for b in built if b is not None]
    return kept, len(built) - len(kept)


def batches(examples: list[dict], batch_size: int, seed: int, skip: int = 0):
    """Endless shuffled batches, reshuffled each epoch with a seeded RNG.

    `skip` drops that many batches first: a resumed run sees exactly the
    batches an uninterrupted one would (the data position is the batch count).
    """
    rng = random.Random(seed)
    order = list(range(len(examples)))
    served = 0
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            served += 1
            if served > skip:
                yield [examples[i] for i in order[start:start + batch_size]]


def masking_preview(item: dict, records: list[dict], train_cfg: dict, count: int = 2) -> list[str]:
    """Two training examples decoded by the item's tokenizer, the masked prompt marked «…» (for the data card)."""
    base = item["base"]
    tokenizer = models.load_base_tokenizer(base)
    max_length = min(train_cfg["max_length"], base.get("max_length", train_cfg["max_length"]))
    return prompts.masking_examples(tokenizer, records, max_length, count, get_family(base["family"]).task)


def settings_for(item: dict, train_cfg: dict) -> dict:
    """The profile's [train] table with the roster's per-candidate overrides applied."""
    return {**train_cfg, **(item.get("train") or {})}


def finetune(item: dict, data_summary: dict, train_cfg: dict, out_uri: str, on_log=None) -> dict:
    """Train one candidate's LoRA adapter and publish it under `out_uri`.

    Resumes from the latest checkpoint under `out_uri` if there is one (a
    retried task). `on_log(step, curve)` is called at every log step (a live card, say).
    """
    import torch

    started = time.time()
    cfg = settings_for(item, train_cfg)
    base = item["base"]
    family = get_family(base["family"])
    tokenizer, model = models.load_base(base)
    torch.manual_seed(cfg["seed"])  # after loading: building a model on a cache miss draws from the RNG too
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = lora_model(model, base["family"], item["lora"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    max_length = min(cfg["max_length"], base.get("max_length", cfg["max_length"]))
    examples, dropped = tokenize(tokenizer, data.read_jsonl(data_summary["train_uri"]), max_length, family.task)
    if not examples:
        raise ValueError(f"{item['name']}: no training example fits max_length={max_length}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = cfg.get("precision", "auto")
    precision = choose_precision(device) if precision == "auto" else precision
    layout = choose_layout(family, cfg)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=cfg.get("weight_decay", 0.0))
    steps, accum, every = cfg["max_steps"], cfg.get("grad_accum", 1), cfg.get("checkpoint_every", 0)
    progress = checkpoints.restore(out_uri, model, optimizer) or {
        "step": 0, "curve": [], "supervised_tokens": 0, "real_tokens": 0, "computed_tokens": 0}
    resumed_from = progress["step"]
    stream = batches(examples, cfg["batch_size"], cfg["seed"], skip=resumed_from * accum)
    log(f"[bold]{item['name']}[/]: {len(examples)} examples ({dropped} too long), {trainable:,} trainable params, "
        f"{steps} steps × {cfg['batch_size']}×{accum}, {layout} batches, {precision} on {device}"
        + (f", resuming after step {resumed_from}" if resumed_from else ""))
    tokens_at_start, loop_started = progress["supervised_tokens"], time.time()
    for step in range(resumed_from, steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, cfg.get("warmup_steps", 0), cfg["learning_rate"])
        step_loss = 0.0
        for _ in range(accum):
            chunk = next(stream)
            batch = make_batch(layout, chunk, max_length, tokenizer.pad_token_id, device)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = batch_loss(model, batch)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{item['name']}: loss is {loss.item()} at step {step + 1}")
            (loss / accum).backward()
            step_loss += loss.item() / accum
            progress["supervised_tokens"] += sum(label != prompts.IGNORE_INDEX for e in chunk for label in e["labels"])
            progress["real_tokens"] += sum(len(e["input_ids"]) for e in chunk)
            progress["computed_tokens"] += computed_positions(batch)
        torch.nn.utils.clip_grad_norm_(params, cfg.get("max_grad_norm", 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        progress["step"] = step + 1
        progress["curve"].append({"step": step + 1, "loss": round(step_loss, 5)})
        if (every and (step + 1) % every == 0) or step + 1 == steps:
            checkpoints.save(out_uri, model, optimizer, progress)
        if (step + 1) % cfg.get("log_every", 10) == 0 or step + 1 == steps:
            rate = (progress["supervised_tokens"] - tokens_at_start) / (time.time() - loop_started)
            log(f"{item['name']}: step {step + 1}/{steps} loss {step_loss:.4f} ({rate:,.0f} supervised tok/s)")
            if on_log:
                on_log(step + 1, progress["curve"])

    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        model.save_pretrained(adapter)
        adapter_uri = storage.upload_dir(adapter, storage.join(out_uri, "adapter"))
    seconds, loop_seconds = time.time() - started, time.time() - loop_started
    return {
        "adapter_uri": adapter_uri,
        "loss_curve": progress["curve"],
        "steps": progress["step"],
        "resumed_from_step": resumed_from,
        "supervised_tokens": progress["supervised_tokens"],
        "real_tokens": progress["real_tokens"],
        "loop_seconds": round(loop_seconds, 2),
        # positions run per token of the examples: >1 is padding, <1 is prefix sharing beating it
        "computed_per_real_token": round(progress["computed_tokens"] / max(1, progress["real_tokens"]), 4),
        "tokens_per_second": round((progress["supervised_tokens"] - tokens_at_start) / max(loop_seconds, 1e-9), 1),
        "train_seconds": round(seconds, 1),
        "precision": precision,
        "layout": layout,
        "device": device,
        "trainable_params": trainable,
        "train_examples": len(examples),
        "dropped_too_long": dropped,
    }
