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
- one runtime decision per task (`runtime.py`): CUDA when present, bf16
  weights and compute on native-bf16 hardware, fp16 with loss scaling where
  bf16 is emulated, fp32 on other CPUs; QLoRA (nf4 base, k-bit preparation)
  and gradient checkpointing only where the plan says memory needs them;
- padded families (OPT, BLOOM, MPT) take the same response-only loss, in
  batches grouped by length so a batch pads little;
- on CUDA (each chosen by the runtime decision and recorded in the row):
  bf16 LoRA weights with fp32 master copies (`master.py`: no cast kernels per
  layer), decoder layers compiled once and reused (`models/kernels.py`),
  Liger's fused kernels for LLaMA/Mistral blocks, and packed rows kept apart by
  a variable-length attention kernel (flash-attn, FlexAttention) — then the
  whole batch is one row, padded to a multiple of 128 so shapes repeat;
- AdamW, linear warm-up + cosine decay, gradient clipping and accumulation,
  optional gradient checkpointing (less memory, more compute);
- resumable checkpoints every N steps (`checkpoints.py`): a retried task
  continues from the last one instead of step 0;
- out-of-memory back-off: a step that runs out of memory is redone with half
  the micro-batch and twice the accumulation (same effective batch), down to 1;
- a guard that stops a diverging run with the step and the reason.
The adapter is written as files; the caller gets back a small dict.
"""

from __future__ import annotations

import gc
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from barbarossa import storage
from barbarossa.console import log
from barbarossa.data import instructions, prompts, tokencache
from barbarossa.models import kernels, loading, losses, roster, runtime, scoring, sharing
from barbarossa.models.families import get_family
from barbarossa.train import checkpoints, early, master


class TrainingDiverged(RuntimeError):
    """Loss became NaN/inf; the message names the step."""


class TrainingOutOfMemory(RuntimeError):
    """Out of memory even at a micro-batch of 1; the message names the sizes tried and the device."""


def is_out_of_memory(error: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA or any backend), or a RuntimeError that says it ran out of memory (MPS, XPU)."""
    import torch

    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError) if k)
    return isinstance(error, kinds) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def free_memory(device: str) -> None:
    """Return what a failed step left behind: unreachable tensors collected, the CUDA cache handed back."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def device_name(device: str) -> str:
    """'cuda (NVIDIA H100 80GB HBM3, 79.1 GiB)' or just the device, for error messages."""
    import torch

    if device != "cuda":
        return device
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return f"cuda ({props.name}, {props.total_memory / 2**30:.1f} GiB)"


def supervised_targets(example: dict, task: str) -> int:
    """Tokens the loss averages over: response tokens a position predicts (a causal label 0 predicts nothing)."""
    labels = example["labels"] if task == "seq2seq" else example["labels"][1:]
    return sum(label != prompts.IGNORE_INDEX for label in labels)


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


def pack_batch(examples: list[dict], row_tokens: int | None = None, pad_id: int = 0, bucket: int = 0) -> dict:
    """Examples packed into rows (one row when `row_tokens` is None) whose position ids restart at 0 per example.

    Each row is flattened by transformers' `DataCollatorWithFlattening`; rows are
    then padded to the longest row, rounded up to a multiple of `bucket` when
    given (a compiled model sees few distinct shapes). Padding sits after every
    example, with ignored labels and its own position ids, so no example attends to it.
    """
    import torch
    from transformers import DataCollatorWithFlattening

    flatten = DataCollatorWithFlattening(separator_id=prompts.IGNORE_INDEX)
    groups = pack_rows([len(e["input_ids"]) for e in examples], row_tokens) if row_tokens else [range(len(examples))]
    rows = [
        flatten(
            [{"input_ids": examples[i]["input_ids"], "labels": examples[i]["labels"]} for i in group],
            return_tensors="np",
        )
        for group in groups
    ]
    width = max(row["input_ids"].shape[1] for row in rows)
    if bucket:
        width = -(-width // bucket) * bucket

    def stacked(key, pad):
        return torch.tensor([list(row[key][0]) + [pad] * (width - row[key].shape[1]) for row in rows])

    return {
        "input_ids": stacked("input_ids", pad_id),
        "labels": stacked("labels", prompts.IGNORE_INDEX),
        "position_ids": torch.tensor(
            [list(row["position_ids"][0]) + list(range(width - row["position_ids"].shape[1])) for row in rows]
        ),
    }


def choose_layout(family, cfg: dict, device: str = "cpu") -> str:
    """The cheapest batch layout this family, these settings and this device allow.

    Shared prefixes save ~30 % of the positions but cost several forward calls
    per batch: a win where compute is the bottleneck (a CPU), a loss on a GPU,
    where each extra call adds a kernel launch per op and layer (measured with
    `make gpu-check`: see README), so a GPU packs into one call instead.
    """
    if family.task != "causal":
        return "padded"
    if (
        family.shares_prefix
        and cfg.get("share_prefix", True)
        and not cfg.get("gradient_checkpointing")
        and device == "cpu"
    ):
        return "shared-prefix"
    return "packed" if family.packs and cfg.get("packing", True) else "padded"


def packing_of(decision: runtime.Runtime, max_length: int) -> dict:
    """How packed rows are cut for this runtime: one row per batch where the attention kernel keeps examples
    apart without a dense mask (else rows of max_length: a dense mask costs a row's length squared), padded to
    a multiple of `kernels.BUCKET` where the model is compiled or FlexAttention's blocks would pad it anyway."""
    varlen = decision.attention in ("flex_attention", "flash_attention_2")
    bucket = decision.compiled or decision.attention == "flex_attention"
    return {"row_tokens": None if varlen else max_length, "bucket": kernels.BUCKET if bucket else 0}


def make_batch(
    layout: str,
    examples: list[dict],
    max_length: int,
    pad_id: int,
    device: str,
    task: str = "causal",
    packing: dict | None = None,
) -> dict:
    """The examples in the given layout, ready for `batch_loss` on `device` (`packing`: from `packing_of`)."""
    if layout == "shared-prefix":
        return sharing.shared_prefix_batch(examples, pad_id)
    packing = packing or {"row_tokens": max_length}
    batch = (
        pack_batch(examples, pad_id=pad_id, **packing) if layout == "packed" else prompts.pad_batch(examples, pad_id)
    )
    if task == "causal" and "labels" in batch:  # a seq2seq loss scores every decoder position: no targets to find
        batch["targets"] = losses.target_positions(batch["labels"])  # found on the host: no device sync
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def computed_positions(batch: dict) -> int:
    """Token positions the model runs for this batch, padding included."""
    return batch["computed"] if "prefixes" in batch else batch["input_ids"].numel()


def batch_loss(model, batch: dict):
    """Mean loss over the batch's supervised tokens, whichever layout the batch has."""
    if "prefixes" in batch:
        return sharing.shared_prefix_losses(model, batch).mean()
    if "position_ids" in batch:
        return losses.packed_token_losses(model, batch).mean()
    if getattr(model.config, "is_encoder_decoder", False):  # every decoder position is a response token
        return model(**batch).loss
    return losses.padded_token_losses(model, batch).mean()


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def warm_token_cache(items: list[dict], data_summary: dict, cache_root: str, tokenizers: dict[str, object]) -> dict:
    """Tokenise the training split once per distinct (tokenizer, max_length, task) of the candidates; the summary
    with `token_cache` set, so every fine-tune task reads its examples instead of tokenising them again."""
    done = set()
    for item in items:
        if item["kind"] != "candidate":
            continue
        base, max_length = item["base"], item["settings"].train.max_length
        key = (base["source"], base.get("revision"), max_length)
        if key not in done:
            done.add(key)
            tokencache.warm(
                tokenizers[base["name"]],
                data_summary["train_uri"],
                data_summary["train_fingerprint"],
                max_length,
                get_family(base["family"]).task,
                cache_root,
                template=prompts.template_of(data_summary.get("language")),
            )
    return {**data_summary, "token_cache": cache_root}


def batches(examples: list[dict], batch_size: int, seed: int, skip: int = 0, by_length: bool = False):
    """Endless shuffled batches, reshuffled each epoch with a seeded RNG.

    `by_length` (padded layouts): each window of 64 batches is sorted by
    length before it is cut, so a batch's examples are of similar length and
    pad little; the batches are then served in random order.
    `skip` drops that many batches first: a resumed run sees exactly the
    batches an uninterrupted one would (the data position is the batch count).
    """
    rng = random.Random(seed)
    order = list(range(len(examples)))
    served = 0
    window = batch_size * 64
    while True:
        rng.shuffle(order)
        cut = list(range(0, len(order) - batch_size + 1 if len(order) >= batch_size else 1, batch_size))
        groups = [order[start : start + batch_size] for start in cut]
        if by_length:
            groups = []
            for first in range(0, len(cut) * batch_size, window):
                part = sorted(
                    order[first : min(first + window, len(cut) * batch_size)],
                    key=lambda i: len(examples[i]["input_ids"]),
                )
                groups += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
            rng.shuffle(groups)
        for group in groups:
            served += 1
            if served > skip:
                yield [examples[i] for i in group]


def masking_preview(item: dict, records: list[dict], tokenizer, count: int = 2, template=None) -> list[str]:
    """Two training examples in the run's template, cut at the item's own max_length and decoded by its tokenizer,
    the masked prompt marked «…» (for the data card)."""
    max_length, family = item["settings"].train.max_length, get_family(item["base"]["family"])
    return prompts.masking_examples(tokenizer, records, max_length, count, family.task, template)


@dataclass
class Trained:
    """What `train` leaves in memory for the same task's evaluation: no reload from disk, same device and dtype."""

    result: dict
    model: object
    tokenizer: object
    runtime: runtime.Runtime


def prepare_for_lora(model, item: dict, decision: runtime.Runtime):
    """k-bit preparation (QLoRA) or gradient checkpointing as decided, then the LoRA adapter."""
    if decision.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=decision.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif decision.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return lora_model(model, item["base"]["family"], item["lora"])


def accumulate_step(
    model,
    chunks: list[list[dict]],
    micro: int,
    scaler,
    decision: runtime.Runtime,
    layout: str,
    max_length: int,
    pad_id: int,
    task: str,
    after_backward=None,
) -> tuple:
    """Forward and backward one optimizer step's batches, each cut into micro-batches of `micro` examples.

    Returns (the step's loss as a device tensor, positions computed). Each batch's
    loss is the mean over its supervised tokens; a batch cut into pieces weights
    each piece by its share of those tokens, so the gradient is the batch's own,
    whatever the cut (exact up to float rounding; LoRA dropout draws its masks in
    another order). An uncut batch runs exactly as before micro-batching existed.
    `after_backward` runs after each backward (master weights collect the gradient).
    """
    import torch

    step_loss, computed = torch.zeros((), device=decision.device), 0
    packing = packing_of(decision, max_length)
    for chunk in chunks:
        pieces = [chunk[start : start + micro] for start in range(0, len(chunk), micro)]
        counts = [sum(supervised_targets(e, task) for e in piece) for piece in pieces]
        for piece, count in zip(pieces, counts):
            batch = make_batch(layout, piece, max_length, pad_id, decision.device, task, packing)
            with runtime.autocast(decision):
                loss = batch_loss(model, batch)
            if len(pieces) > 1:
                loss = loss * (count / max(1, sum(counts)))
            scaler.scale(loss / len(chunks)).backward()
            if after_backward:
                after_backward()
            step_loss += loss.detach() / len(chunks)  # read once per step: a sync per micro-batch would starve a GPU
            computed += computed_positions(batch)
    return step_loss, computed


def finetune(item: dict, data_summary: dict, train_cfg: dict, out_uri: str, on_log=None) -> dict:
    """`train` for callers that only want the result dict (the model is dropped)."""
    return train(item, data_summary, train_cfg, out_uri, on_log).result


def train(
    item: dict, data_summary: dict, train_cfg: dict, out_uri: str, on_log=None, hardware: runtime.Hardware | None = None
) -> Trained:
    """Train one candidate's LoRA adapter and publish it under `out_uri`.

    Resumes from the latest checkpoint under `out_uri` if there is one (a
    retried task). `on_log(step, curve)` is called at every log step (a live card, say), with `dev=` the early-stopping
    state (train/early.py) when a dev split is scored, also after each dev evaluation.

    Out of memory in a forward or backward pass: the step's partial gradients
    are dropped, memory freed, the micro-batch halved (accumulation doubled, so
    batch_size × grad_accum examples still make a step) and the interrupted
    step redone from its start on the same examples — nothing is counted or
    applied twice, and no finished step is repeated as a checkpoint rewind would.
    At a micro-batch of 1 it raises `TrainingOutOfMemory` instead.
    """
    import torch

    started = time.time()
    cfg = roster.settings_for(item, train_cfg)
    base = item["base"]
    family = get_family(base["family"])
    tokenizer, model, decision = loading.load_for_item(item, cfg, hardware)
    torch.manual_seed(cfg["seed"])  # after loading: building a model on a cache miss draws from the RNG too
    model = prepare_for_lora(model, item, decision)
    compiled = kernels.compile_layers(model) if decision.compiled else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    max_length = min(cfg["max_length"], base.get("max_length", cfg["max_length"]))
    examples, dropped = tokencache.training_examples(tokenizer, data_summary, max_length, family.task)
    if not examples:
        raise ValueError(f"{item['name']}: no training example fits max_length={max_length}")

    device = decision.device
    layout = choose_layout(family, {**cfg, "gradient_checkpointing": decision.gradient_checkpointing}, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]

    def adamw(tensors):
        return torch.optim.AdamW(
            tensors, lr=cfg["learning_rate"], weight_decay=cfg.get("weight_decay", 0.0), fused=device == "cuda"
        )

    optimizer = master.MasterWeights(params, decision.torch_dtype, adamw) if decision.master_weights else adamw(params)
    stepped = optimizer.trained() if decision.master_weights else params  # what clipping reads
    after_backward = optimizer.accumulate if decision.master_weights else None
    scaler = torch.amp.GradScaler(device, enabled=decision.loss_scaling)
    steps, accum, every = cfg["max_steps"], cfg.get("grad_accum", 1), cfg.get("checkpoint_every", 0)
    batch_size = cfg["batch_size"]
    progress = checkpoints.restore(out_uri, model, optimizer) or {
        "step": 0,
        "curve": [],
        "supervised_tokens": 0,
        "real_tokens": 0,
        "computed_tokens": 0,
    }
    resumed_from = progress["step"]
    # the data stream stays in batches of `batch_size` (so resuming skips the same batches whatever the micro-batch);
    # each is cut into micro-batches of `micro` examples, smaller after an out-of-memory back-off (kept in checkpoints)
    micro = min(progress.setdefault("micro_batch", batch_size), batch_size)
    progress.setdefault("oom_backoffs", 0)
    watch, dev_bits = None, None
    if early.enabled(cfg):  # early stopping / fail-fast: its state travels in the checkpoints
        dev_records = instructions.read_jsonl(data_summary["dev_uri"])
        max_eval = cfg["max_length"]

        def dev_bits() -> float:
            model.eval()
            with kernels.evaluating(model):
                rows = scoring.response_nll(
                    model, tokenizer, dev_records, max_eval, batch_size, decision, data_summary.get("language")
                )
            model.train()
            bits = scoring.bits_per_byte(rows)
            if bits is None:
                raise ValueError(f"{item['name']}: no dev response fits max_length={max_eval}; raise it or dev_rows")
            return bits

        if progress.get("early") is None:
            with model.disable_adapter():  # the untuned base, on the same rows and scorer: what fail-fast compares with
                progress["early"] = early.new_state(dev_bits())
        watch = progress["early"]
    stream = batches(examples, batch_size, cfg["seed"], skip=resumed_from * accum, by_length=layout == "padded")
    log(
        f"[bold]{item['name']}[/]: {len(examples)} examples ({dropped} too long), {trainable:,} trainable params, "
        f"{steps} steps × {batch_size}×{accum}, {layout} batches, {describe(decision)}"
        + (f", resuming after step {resumed_from}" if resumed_from else "")
        + (f", micro-batch {micro}" if micro < batch_size else "")
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens_at_start, loop_started = progress["supervised_tokens"], time.time()
    for step in range(resumed_from, steps):
        if watch is not None and watch["stopped"]:  # resumed after it had decided to stop
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, cfg.get("warmup_steps", 0), cfg["learning_rate"])
        chunks = [next(stream) for _ in range(accum)]
        while True:  # redone with a smaller micro-batch after running out of memory: nothing is counted twice
            try:
                step_loss, computed = accumulate_step(
                    model,
                    chunks,
                    micro,
                    scaler,
                    decision,
                    layout,
                    max_length,
                    tokenizer.pad_token_id,
                    family.task,
                    after_backward,
                )
                break
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            # outside the handler: the exception's frames (and the activations they hold) are gone before freeing
            optimizer.zero_grad(set_to_none=True)
            free_memory(device)
            if micro == 1:
                longest = max(len(e["input_ids"]) for chunk in chunks for e in chunk)
                raise TrainingOutOfMemory(
                    f"{item['name']}: out of memory at micro-batch 1 (started at {batch_size}) on {device_name(device)}"
                    f" in step {step + 1}, longest example {longest} tokens ({reason}); lower max_length, or enable"
                    " gradient checkpointing or QLoRA, or use a device with more memory"
                )
            micro = max(1, micro // 2)
            progress["micro_batch"], progress["oom_backoffs"] = micro, progress["oom_backoffs"] + 1
            log(
                f"[yellow]{item['name']}: out of memory in step {step + 1}; redoing it with micro-batch {micro} × "
                f"{accum * math.ceil(batch_size / micro)} accumulated (effective batch {batch_size * accum})[/]"
            )
        progress["supervised_tokens"] += sum(
            label != prompts.IGNORE_INDEX for chunk in chunks for e in chunk for label in e["labels"]
        )
        progress["real_tokens"] += sum(len(e["input_ids"]) for chunk in chunks for e in chunk)
        progress["computed_tokens"] += computed
        step_loss = step_loss.item()
        if not math.isfinite(step_loss):
            raise TrainingDiverged(f"{item['name']}: loss is {step_loss} at step {step + 1}")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(stepped, cfg.get("max_grad_norm", 1.0))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        progress["step"] = step + 1
        progress["curve"].append({"step": step + 1, "loss": round(step_loss, 5)})
        if watch is not None and early.due(cfg, step + 1, steps):
            bits = dev_bits()
            if early.update(watch, step + 1, bits, cfg):  # the best so far: its weights are the ones to keep
                progress["best_weights"] = {
                    name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad
                }
            log(
                f"{item['name']}: dev {bits:.4f} bits per byte at step {step + 1} (base {watch['base']:.4f}, "
                f"best {watch['best']:.4f} at step {watch['best_step']})"
            )
            if on_log:
                on_log(step + 1, progress["curve"], dev=watch)
        stopping = watch is not None and watch["stopped"]
        if (every and (step + 1) % every == 0) or step + 1 == steps or stopping:
            checkpoints.save(out_uri, model, optimizer, progress)
        if (step + 1) % cfg.get("log_every", 10) == 0 or step + 1 == steps:
            rate = (progress["supervised_tokens"] - tokens_at_start) / (time.time() - loop_started)
            log(f"{item['name']}: step {step + 1}/{steps} loss {step_loss:.4f} ({rate:,.0f} supervised tok/s)")
            if on_log:
                on_log(step + 1, progress["curve"], **({"dev": watch} if watch is not None else {}))
        if stopping:
            log(f"{item['name']}: stopped after step {step + 1} of {steps}: {watch['reason']}")
            break

    if watch is not None and progress.get("best_weights") and watch["best_step"] != progress["step"]:
        params = dict(model.named_parameters())  # the best evaluation's adapter, not the last step's
        with torch.no_grad():
            for name, value in progress["best_weights"].items():
                params[name].copy_(value.to(params[name].device))
    with tempfile.TemporaryDirectory() as tmp:
        adapter = Path(tmp) / "adapter"
        model.save_pretrained(adapter)
        adapter_uri = storage.upload_dir(adapter, storage.join(out_uri, "adapter"))
    seconds, loop_seconds = time.time() - started, time.time() - loop_started
    result = {
        "adapter_uri": adapter_uri,
        "loss_curve": progress["curve"],
        "steps": progress["step"],
        "resumed_from_step": resumed_from,
        # the micro-batch it finished with and the accumulation that keeps batch_size × grad_accum examples a step
        "micro_batch": micro,
        "grad_accum": accum * math.ceil(batch_size / micro),
        "oom_backoffs": progress["oom_backoffs"],
        "supervised_tokens": progress["supervised_tokens"],
        "real_tokens": progress["real_tokens"],
        "loop_seconds": round(loop_seconds, 2),
        # positions run per token of the examples: >1 is padding, <1 is prefix sharing beating it
        "computed_per_real_token": round(progress["computed_tokens"] / max(1, progress["real_tokens"]), 4),
        "tokens_per_second": round((progress["supervised_tokens"] - tokens_at_start) / max(loop_seconds, 1e-9), 1),
        "train_seconds": round(seconds, 1),
        "precision": decision.compute,
        "layout": layout,
        "device": device,
        "runtime": decision.as_dict(),
        "compiled_layers": compiled,
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None,
        "trainable_params": trainable,
        "train_examples": len(examples),
        "dropped_too_long": dropped,
        "max_steps": steps,
        "early": {k: watch[k] for k in ("base", "curve", "best", "best_step", "stopped", "reason")} if watch else None,
        # the steps not run, at this run's pace: what stopping early saved against max_steps
        "gpu_seconds_saved": round(
            (steps - progress["step"]) * loop_seconds / max(1, progress["step"] - resumed_from), 1
        )
        if watch is not None
        else None,
    }
    return Trained(result, model, tokenizer, decision)


def describe(decision: runtime.Runtime) -> str:
    """The runtime decision in a few words, for logs."""
    parts = [f"{decision.compute} on {decision.device}", f"{decision.weight_dtype} weights"]
    if decision.quantization != "none":
        parts.append(f"{decision.quantization} base (QLoRA)")
    if decision.gradient_checkpointing:
        parts.append("gradient checkpointing")
    parts.append(f"{decision.attention} attention")
    if decision.master_weights:
        parts.append(f"{decision.adapter_dtype} LoRA weights with fp32 masters")
    if decision.compiled:
        parts.append("compiled layers")
    if decision.kernels != "torch":
        parts.append(f"{decision.kernels} kernels")
    return ", ".join(parts)
