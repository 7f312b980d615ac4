"""LoRA fine-tuning of one candidate: a small, explicit PyTorch loop.

Features and their trade-offs:
- shared prompt prefixes (`shared_prefix.py`, causal families): the preamble that
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
  layer), decoder layers compiled once and reused (`engine/kernels.py`),
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
The run itself is `LoraRecipe` (setup, step, dev evaluation, finish), built from the functions
before it; `train` runs it. The adapter is written as files; the caller gets back a `Trained`:
the model in memory and a typed `TrainResult`, whose `as_dict()` the flow stores.
"""

from __future__ import annotations

import copy
import gc
import math
import random
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from barbarossa import storage
from barbarossa.config import Profile, Train
from barbarossa.console import log
from barbarossa.data import instructions, prompts, tokencache
from barbarossa.engine import kernels, levers, losses, runtime, scoring, shared_prefix
from barbarossa.errors import UserError
from barbarossa.models.families import get_family
from barbarossa.planning import plan
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


def choose_layout(family, cfg: Train, device: str = "cpu") -> str:
    """The cheapest batch layout this family, these settings and this device allow.

    Shared prefixes save ~30 % of the positions but cost several forward calls
    per batch: a win where compute is the bottleneck (a CPU), a loss on a GPU,
    where each extra call adds a kernel launch per op and layer (measured with
    `make gpu-check`: see docs/gpu.md), so a GPU packs into one call instead.
    """
    if family.task != "causal":
        return "padded"
    if family.shares_prefix and cfg.share_prefix and not cfg.gradient_checkpointing and device == "cpu":
        return "shared-prefix"
    return "packed" if family.packs and cfg.packing else "padded"


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
        return shared_prefix.shared_prefix_batch(examples, pad_id)
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
        return shared_prefix.shared_prefix_losses(model, batch).mean()
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


@dataclass(frozen=True)
class TrainResult:
    """What one fine-tune did. `as_dict()` is the flow's `train` artifact, which the leaderboard, history, release
    and cards read — its keys and values are those of the untyped dict it replaced, so old runs still read alike."""

    adapter_uri: str
    loss_curve: tuple[dict, ...]  # {"step", "loss"} per optimizer step, resumed steps included
    steps: int  # optimizer steps done (fewer than max_steps when early stopping stopped the run)
    resumed_from_step: int
    micro_batch: int  # the micro-batch it finished with (smaller after out-of-memory back-offs)
    grad_accum: int  # the accumulation that keeps batch_size × grad_accum examples a step at that micro-batch
    oom_backoffs: int
    supervised_tokens: int
    real_tokens: int
    loop_seconds: float
    computed_per_real_token: float  # positions run per token of the examples: >1 is padding, <1 is prefix sharing
    tokens_per_second: float  # supervised tokens per second of this task's loop (not of a resumed task's earlier part)
    train_seconds: float
    precision: str
    layout: str
    device: str
    runtime: dict  # `runtime.Runtime.as_dict()`
    compiled_layers: int
    peak_gpu_gb: float | None
    trainable_params: int
    train_examples: int
    dropped_too_long: int
    max_steps: int
    early: dict | None  # the early-stopping state (train/early.py) without its counters; None without a dev split
    gpu_seconds_saved: float | None  # the steps not run, at this run's pace: what stopping early saved

    def as_dict(self) -> dict:
        """A plain dict, copied: changing it leaves the result as it was."""
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        return {**values, "loss_curve": list(values["loss_curve"])}


@dataclass
class Trained:
    """What `train` leaves in memory for the same task's evaluation: no reload from disk, same device and dtype.

    `result` is `outcome.as_dict()`, made once: the dict the flow stores as its `train` artifact.
    """

    outcome: TrainResult
    model: object
    tokenizer: object
    runtime: runtime.Runtime
    result: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.result = self.outcome.as_dict()


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


class LoraRecipe:
    """One candidate's LoRA fine-tune: `setup()`, `train()` (its `step()`s and `evaluate_dev()`s), `finish()`.

    Why a class: the run's state (model, optimizer, data stream, progress, early-stopping watch) as attributes,
    so each stage is a short method that can be read, and driven, on its own; the pure parts above stay functions.
    The order of `setup()` is part of the result: the RNG is seeded after loading and before the LoRA weights are
    drawn, and a restored checkpoint resets it after that, so a resumed run draws what an uninterrupted one would.
    """

    def __init__(
        self,
        item: dict,
        data_summary: dict,
        settings: Profile,
        out_uri: str,
        on_log=None,
        hardware: runtime.Hardware | None = None,
        decision: runtime.Runtime | None = None,
    ):
        self.item, self.data_summary, self.out_uri = item, data_summary, out_uri
        self.on_log, self.hardware, self.decision = on_log, hardware, decision
        self.name, self.settings = item["name"], settings
        self.cfg, self.early = settings.train, settings.early_stopping  # the item's, resolved in start
        self.family = get_family(item["base"]["family"])
        self.steps, self.batch_size = self.cfg.max_steps, self.cfg.batch_size
        self.accum, self.every = self.cfg.grad_accum, self.cfg.checkpoint_every
        self.watch = None  # the early-stopping state (train/early.py) when a dev split is scored
        self.loop_started, self.stopped = None, False

    # --- setup: one component per method, in the order the RNG draws depend on ---

    def setup(self) -> None:
        """Load, adapt and restore everything a step needs; logs what the run will do."""
        self.started = time.time()
        self._setup_model()
        self._setup_examples()
        self._setup_optimizer()
        self._restore_progress()
        self._setup_early_stopping()
        # the data position is the batch count: a resumed run skips exactly the batches it already trained on
        self.stream = batches(
            self.examples,
            self.batch_size,
            self.cfg.seed,
            skip=self.resumed_from * self.accum,
            by_length=self.layout == "padded",
        )
        log(
            f"[bold]{self.name}[/]: {len(self.examples)} examples ({self.dropped} too long), "
            f"{self.trainable:,} trainable params, {self.steps} steps × {self.batch_size}×{self.accum}, "
            f"{self.layout} batches, {describe(self.decision)}"
            + (f", resuming after step {self.resumed_from}" if self.resumed_from else "")
            + (f", micro-batch {self.micro}" if self.micro < self.batch_size else "")
        )

    def _setup_model(self) -> None:
        import torch

        # decided before loading: a lever that fails while the model loads is known to the first-step guard
        self.decision = self.decision or plan.decision_for_item(self.item, self.cfg, self.hardware)
        self.tokenizer, model, self.decision = plan.load_for_item(self.item, self.cfg, decision=self.decision)
        torch.manual_seed(self.cfg.seed)  # after loading: building a model on a cache miss draws from the RNG too
        self.model = prepare_for_lora(model, self.item, self.decision)
        self.compiled_layers = kernels.compile_layers(self.model) if self.decision.compiled else 0
        self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.device = self.decision.device

    def _setup_examples(self) -> None:
        cfg = self.cfg
        self.max_length = cfg.max_length
        self.examples, self.dropped = tokencache.training_examples(
            self.tokenizer, self.data_summary, self.max_length, self.family.task
        )
        if not self.examples:
            raise ValueError(f"{self.name}: no training example fits max_length={self.max_length}")
        checkpointing = cfg.replace(gradient_checkpointing=self.decision.gradient_checkpointing)
        self.layout = choose_layout(self.family, checkpointing, self.device)

    def _setup_optimizer(self) -> None:
        """AdamW, over fp32 masters of 16-bit LoRA weights where the runtime decided so (`master.py`)."""
        import torch

        self.model.train()
        params = [p for p in self.model.parameters() if p.requires_grad]

        def adamw(tensors):
            return torch.optim.AdamW(
                tensors,
                lr=self.cfg.learning_rate,
                weight_decay=self.cfg.weight_decay,
                fused=self.device == "cuda",
            )

        if self.decision.master_weights:
            self.optimizer = master.MasterWeights(params, self.decision.torch_dtype, adamw)
            self.clipped, self.after_backward = self.optimizer.trained(), self.optimizer.accumulate
        else:
            self.optimizer = adamw(params)
            self.clipped, self.after_backward = params, None
        self.scaler = torch.amp.GradScaler(self.device, enabled=self.decision.loss_scaling)

    def _restore_progress(self) -> None:
        """The latest checkpoint's weights, optimizer, RNG and progress (a retried task), else a clean start."""
        self.progress = checkpoints.restore(self.out_uri, self.model, self.optimizer) or {
            "step": 0,
            "curve": [],
            "supervised_tokens": 0,
            "real_tokens": 0,
            "computed_tokens": 0,
        }
        self.resumed_from = self.progress["step"]
        # the data stream stays in batches of `batch_size` (resuming skips the same batches whatever the micro-batch);
        # each is cut into micro-batches of `micro` examples, smaller after an out-of-memory back-off (kept in
        # checkpoints)
        self.micro = min(self.progress.setdefault("micro_batch", self.batch_size), self.batch_size)
        self.progress.setdefault("oom_backoffs", 0)

    def _setup_early_stopping(self) -> None:
        """The dev split and the watch; the untuned base is scored once, its state then travels in checkpoints."""
        if not self.early.enabled:
            return
        self.dev_records = instructions.read_jsonl(self.data_summary["dev_uri"])
        if self.progress.get("early") is None:
            with self.model.disable_adapter():  # the untuned base, on the same rows and scorer: what fail-fast compares
                self.progress["early"] = early.new_state(self.evaluate_dev())
        self.watch = self.progress["early"]

    # --- the loop ---

    def begin(self) -> None:
        """Start the loop's clocks and counters: peak memory, the tokens trained by this process."""
        import torch

        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self.tokens_at_start, self.loop_started = self.progress["supervised_tokens"], time.time()
        self.stopped = self.watch is not None and self.watch["stopped"]  # resumed after it had decided to stop

    def train(self) -> None:
        """Steps from the next one to max_steps, with dev checks, checkpoints and logs; stops early if told to."""
        if self.loop_started is None:
            self.begin()
        while not self.stopped and self.progress["step"] < self.steps:
            self.advance()

    def advance(self) -> None:
        """The next optimizer step and what follows it: a dev check, a checkpoint, a log line, as they fall due."""
        step = self.progress["step"]
        loss, done = self.step(step), step + 1
        if self.watch is not None and early.due(self.early, done, self.steps):
            self._check_early_stopping(done)
        self.stopped = self.watch is not None and self.watch["stopped"]
        if (self.every and done % self.every == 0) or done == self.steps or self.stopped:
            checkpoints.save(self.out_uri, self.model, self.optimizer, self.progress)
        if done % self.cfg.log_every == 0 or done == self.steps:
            self._log_step(done, loss)
        if self.stopped:
            log(f"{self.name}: stopped after step {done} of {self.steps}: {self.watch['reason']}")

    def step(self, step: int) -> float:
        """Optimizer step `step` (0-based) on the stream's next `grad_accum` batches; its loss.

        Out of memory in a forward or backward pass: the step is redone from its start with a smaller
        micro-batch (`_back_off`), on the same examples — nothing is counted or applied twice.
        """
        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, self.steps, self.cfg.warmup_steps, self.cfg.learning_rate)
        chunks = [next(self.stream) for _ in range(self.accum)]
        step_loss, computed = self._forward_backward(chunks, step)
        self._count_tokens(chunks, computed)
        loss = step_loss.item()
        if not math.isfinite(loss):
            raise TrainingDiverged(f"{self.name}: loss is {loss} at step {step + 1}")
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.clipped, self.cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress["step"] = step + 1
        self.progress["curve"].append({"step": step + 1, "loss": round(loss, 5)})
        return loss

    def _forward_backward(self, chunks: list[list[dict]], step: int) -> tuple:
        """`accumulate_step` at the current micro-batch, retried smaller after each out-of-memory error."""
        while True:
            try:
                return accumulate_step(
                    self.model,
                    chunks,
                    self.micro,
                    self.scaler,
                    self.decision,
                    self.layout,
                    self.max_length,
                    self.tokenizer.pad_token_id,
                    self.family.task,
                    self.after_backward,
                )
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            # outside the handler: the exception's frames (and the activations they hold) are gone before freeing
            self._back_off(chunks, step, reason)

    def _back_off(self, chunks: list[list[dict]], step: int, reason: str) -> None:
        """Drop the step's partial gradients, free memory and halve the micro-batch (accumulation doubles, so
        batch_size × grad_accum examples still make a step); at a micro-batch of 1, `TrainingOutOfMemory`."""
        self.optimizer.zero_grad(set_to_none=True)
        free_memory(self.device)
        if self.micro == 1:
            longest = max(len(e["input_ids"]) for chunk in chunks for e in chunk)
            raise TrainingOutOfMemory(
                f"{self.name}: out of memory at micro-batch 1 (started at {self.batch_size}) on "
                f"{device_name(self.device)} in step {step + 1}, longest example {longest} tokens ({reason}); "
                "lower max_length, or enable gradient checkpointing or QLoRA, or use a device with more memory"
            )
        self.micro = max(1, self.micro // 2)
        self.progress["micro_batch"], self.progress["oom_backoffs"] = self.micro, self.progress["oom_backoffs"] + 1
        log(
            f"[yellow]{self.name}: out of memory in step {step + 1}; redoing it with micro-batch {self.micro} × "
            f"{self.accum * math.ceil(self.batch_size / self.micro)} accumulated "
            f"(effective batch {self.batch_size * self.accum})[/]"
        )

    def _count_tokens(self, chunks: list[list[dict]], computed: int) -> None:
        progress = self.progress
        progress["supervised_tokens"] += sum(
            label != prompts.IGNORE_INDEX for chunk in chunks for e in chunk for label in e["labels"]
        )
        progress["real_tokens"] += sum(len(e["input_ids"]) for chunk in chunks for e in chunk)
        progress["computed_tokens"] += computed

    def evaluate_dev(self) -> float:
        """Dev bits per byte of the model as it is now, with the evaluation's own scorer (what early stopping reads)."""
        self.model.eval()
        with kernels.evaluating(self.model):
            rows = scoring.response_nll(
                self.model,
                self.tokenizer,
                self.dev_records,
                self.max_length,
                self.batch_size,
                self.decision,
                self.data_summary.get("language"),
            )
        self.model.train()
        bits = scoring.bits_per_byte(rows)
        if bits is None:
            raise ValueError(f"{self.name}: no dev response fits max_length={self.max_length}; raise it or dev_rows")
        return bits

    def _check_early_stopping(self, done: int) -> None:
        """Score dev after step `done`; a new best keeps its weights (the adapter published in the end)."""
        bits, watch = self.evaluate_dev(), self.watch
        if early.update(watch, done, bits, self.early):
            self.progress["best_weights"] = {
                name: p.detach().cpu().clone() for name, p in self.model.named_parameters() if p.requires_grad
            }
        log(
            f"{self.name}: dev {bits:.4f} bits per byte at step {done} (base {watch['base']:.4f}, "
            f"best {watch['best']:.4f} at step {watch['best_step']})"
        )
        if self.on_log:
            self.on_log(done, self.progress["curve"], dev=watch)

    def _log_step(self, done: int, loss: float) -> None:
        rate = (self.progress["supervised_tokens"] - self.tokens_at_start) / (time.time() - self.loop_started)
        log(f"{self.name}: step {done}/{self.steps} loss {loss:.4f} ({rate:,.0f} supervised tok/s)")
        if self.on_log:
            self.on_log(done, self.progress["curve"], **({"dev": self.watch} if self.watch is not None else {}))

    def release(self) -> None:
        """Let go of the model and optimizer (a failed start, before the next attempt loads its own)."""
        for name in ("model", "optimizer", "stream", "clipped", "after_backward", "scaler"):
            self.__dict__.pop(name, None)
        free_memory(self.decision.device if self.decision else "cpu")

    # --- finish ---

    def finish(self) -> Trained:
        """The best dev evaluation's weights back in the model, the adapter published, what the run did."""
        self._restore_best_weights()
        with tempfile.TemporaryDirectory() as tmp:
            adapter = Path(tmp) / "adapter"
            self.model.save_pretrained(adapter)
            adapter_uri = storage.upload_dir(adapter, storage.join(self.out_uri, "adapter"))
        return Trained(self._result(adapter_uri), self.model, self.tokenizer, self.decision)

    def _restore_best_weights(self) -> None:
        import torch

        best = self.progress.get("best_weights")
        if self.watch is None or not best or self.watch["best_step"] == self.progress["step"]:
            return
        params = dict(self.model.named_parameters())  # the best evaluation's adapter, not the last step's
        with torch.no_grad():
            for name, value in best.items():
                params[name].copy_(value.to(params[name].device))

    def _result(self, adapter_uri: str) -> TrainResult:
        import torch

        progress, watch, steps = self.progress, self.watch, self.steps
        seconds, loop_seconds = time.time() - self.started, time.time() - self.loop_started
        trained_here = progress["supervised_tokens"] - self.tokens_at_start
        steps_run = max(1, progress["step"] - self.resumed_from)
        return TrainResult(
            adapter_uri=adapter_uri,
            loss_curve=tuple(progress["curve"]),
            steps=progress["step"],
            resumed_from_step=self.resumed_from,
            micro_batch=self.micro,
            grad_accum=self.accum * math.ceil(self.batch_size / self.micro),
            oom_backoffs=progress["oom_backoffs"],
            supervised_tokens=progress["supervised_tokens"],
            real_tokens=progress["real_tokens"],
            loop_seconds=round(loop_seconds, 2),
            computed_per_real_token=round(progress["computed_tokens"] / max(1, progress["real_tokens"]), 4),
            tokens_per_second=round(trained_here / max(loop_seconds, 1e-9), 1),
            train_seconds=round(seconds, 1),
            precision=self.decision.compute,
            layout=self.layout,
            device=self.device,
            runtime=self.decision.as_dict(),
            compiled_layers=self.compiled_layers,
            peak_gpu_gb=round(torch.cuda.max_memory_allocated() / 1e9, 2) if self.device == "cuda" else None,
            trainable_params=self.trainable,
            train_examples=len(self.examples),
            dropped_too_long=self.dropped,
            max_steps=steps,
            early={k: watch[k] for k in ("base", "curve", "best", "best_step", "stopped", "reason")}
            if watch is not None
            else None,
            # the steps not run, at this run's pace: what stopping early saved against max_steps
            gpu_seconds_saved=round((steps - progress["step"]) * loop_seconds / steps_run, 1)
            if watch is not None
            else None,
        )


def train(
    item: dict,
    data_summary: dict,
    settings: Profile,
    out_uri: str,
    on_log=None,
    hardware: runtime.Hardware | None = None,
) -> Trained:
    """Train one candidate's LoRA adapter and publish it under `out_uri` (the recipe: `LoraRecipe`).

    `settings` are the item's resolved settings (`Profile.for_item`: its [train] with the roster's overrides
    and the base's length cap, and [early_stopping]).

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
    recipe = guarded_start(LoraRecipe(item, data_summary, settings, out_uri, on_log, hardware))
    recipe.train()
    return recipe.finish()


def guarded_start(recipe: LoraRecipe) -> LoraRecipe:
    """`setup()` and the first step, where a speed lever that cannot run here fails (a compile error, a Triton
    kernel, an attention kernel refusing the shapes): that lever is turned off, the start redone without it,
    one line logged and the fallback kept in the runtime (`fallbacks`, in the row) — the fine-tune goes on."""
    while True:
        try:
            recipe.setup()
            recipe.begin()
            if recipe.progress["step"] < recipe.steps:
                recipe.advance()
            return recipe
        except (UserError, TrainingOutOfMemory):
            raise
        except Exception as error:
            lever, why = _lever_to_blame(error, recipe.decision)
            if lever is None:
                raise
        # outside the handler: the failed attempt's frames (and the model they hold) are gone before it is freed
        decision = runtime.without(recipe.decision, lever, why)
        log(f"[yellow]{recipe.name}: {lever} failed at the first step ({why}); going on without it[/]")
        recipe.release()
        recipe = LoraRecipe(
            recipe.item, recipe.data_summary, recipe.settings, recipe.out_uri, recipe.on_log, recipe.hardware, decision
        )


def _lever_to_blame(error: BaseException, decision: runtime.Runtime | None) -> tuple[str | None, str]:
    """The taken lever an error came from, and the error in words. An error from none of them traced: the first
    taken lever in `levers.LEVERS` order (the riskiest), unless our own code raised it (a check, not a lever)."""
    taken = runtime.taken_levers(decision) if decision is not None else []
    why = levers.reason(error)
    lever = levers.blame(error, taken)
    if lever or not taken:
        return lever, why
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is not None and "/barbarossa/" in trace.tb_frame.f_code.co_filename.replace("\\", "/"):
        return None, why
    return taken[0], f"{why} (not traced to one lever: the riskiest taken one is turned off first)"


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
