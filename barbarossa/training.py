"""LoRA fine-tuning of one candidate: a small, explicit PyTorch loop.

Dynamic padding to the longest example of each batch, prompt-masked labels,
AdamW with warm-up + cosine decay, gradient clipping and accumulation, and a
guard that stops a diverging run with the step and reason. The adapter is
written as files; the caller gets back a small dict (URIs and numbers).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

from barbarossa import data, models, prompts, storage
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


def _pad(rows: list[list[int]], value: int, side: str) -> list[list[int]]:
    width = max(len(r) for r in rows)
    return [([value] * (width - len(r)) + r) if side == "left" else (r + [value] * (width - len(r))) for r in rows]


def pad_batch(examples: list[dict], pad_id: int, side: str = "right") -> dict:
    """Tensors for a batch padded to its longest example; pad labels are ignored.

    Inputs and labels are padded separately: the same length for a causal LM,
    the decoder side's own length for seq2seq.
    """
    import torch

    ids = [e["input_ids"] for e in examples]
    batch = {
        "input_ids": torch.tensor(_pad(ids, pad_id, side)),
        "attention_mask": torch.tensor(_pad([[1] * len(r) for r in ids], 0, side)),
    }
    if all("labels" in e for e in examples):
        batch["labels"] = torch.tensor(_pad([e["labels"] for e in examples], prompts.IGNORE_INDEX, side))
    return batch


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


def batches(examples: list[dict], batch_size: int, seed: int):
    """Endless shuffled batches, reshuffled each epoch with a seeded RNG."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size):
            yield [examples[i] for i in order[start:start + batch_size]]


def settings_for(item: dict, train_cfg: dict) -> dict:
    """The profile's [train] table with the roster's per-candidate overrides applied."""
    return {**train_cfg, **(item.get("train") or {})}


def finetune(item: dict, data_summary: dict, train_cfg: dict, out_uri: str, on_log=None) -> dict:
    """Train one candidate's LoRA adapter and publish it under `out_uri`.

    `on_log(step, curve)` is called at every log step (a live card, say).
    """
    import torch

    started = time.time()
    train_cfg = settings_for(item, train_cfg)
    torch.manual_seed(train_cfg["seed"])
    base = item["base"]
    task = get_family(base["family"]).task
    tokenizer, model = models.load_base(base)
    model = lora_model(model, base["family"], item["lora"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    max_length = min(train_cfg["max_length"], base.get("max_length", train_cfg["max_length"]))
    examples, dropped = tokenize(tokenizer, data.read_jsonl(data_summary["train_uri"]), max_length, task)
    if not examples:
        raise ValueError(f"{item['name']}: no training example fits max_length={max_length}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = train_cfg.get("precision", "auto")
    precision = choose_precision(device) if precision == "auto" else precision
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg["learning_rate"], weight_decay=train_cfg.get("weight_decay", 0.0))
    steps, accum = train_cfg["max_steps"], train_cfg.get("grad_accum", 1)
    stream = batches(examples, train_cfg["batch_size"], train_cfg["seed"])
    curve, tokens = [], 0
    log(f"[bold]{item['name']}[/]: {len(examples)} examples ({dropped} too long), {trainable:,} trainable params, "
        f"{steps} steps × {train_cfg['batch_size']}×{accum}, {precision} on {device}")
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, train_cfg.get("warmup_steps", 0), train_cfg["learning_rate"])
        step_loss = 0.0
        for _ in range(accum):
            batch = {k: v.to(device) for k, v in pad_batch(next(stream), tokenizer.pad_token_id).items()}
            with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{item['name']}: loss is {loss.item()} at step {step + 1}")
            (loss / accum).backward()
            step_loss += loss.item() / accum
            tokens += int((batch["labels"] != prompts.IGNORE_INDEX).sum())
        torch.nn.utils.clip_grad_norm_(params, train_cfg.get("max_grad_norm", 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        curve.append({"step": step + 1, "loss": round(step_loss, 5)})
        if (step + 1) % train_cfg.get("log_every", 10) == 0 or step + 1 == steps:
            rate = tokens / (time.time() - started)
            log(f"{item['name']}: step {step + 1}/{steps} loss {step_loss:.4f} ({rate:,.0f} supervised tok/s)")
            if on_log:
                on_log(step + 1, curve)

    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        model.save_pretrained(adapter)
        adapter_uri = storage.upload_dir(adapter, storage.join(out_uri, "adapter"))
    seconds = time.time() - started
    return {
        "adapter_uri": adapter_uri,
        "loss_curve": curve,
        "steps": steps,
        "supervised_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "train_seconds": round(seconds, 1),
        "precision": precision,
        "device": device,
        "trainable_params": trainable,
        "train_examples": len(examples),
        "dropped_too_long": dropped,
    }
