"""Training throughput: the project's trainer vs the usual HF `Trainer` baseline, on SmolLM2-135M.

All variants run in this process, on the bundled data, with the same LoRA recipe,
batch size, learning-rate schedule and number of optimizer steps (so the same
number of examples):

  (a)  HF Trainer, dynamic padding to the longest example of each batch
       (DataCollatorForLanguageModeling), fp32, loss on all tokens — the usual baseline;
  (a') the same, every example padded to the maximum length — for reference;
  (b)  barbarossa.train.loop.finetune as the flow runs it: the prompt prefix a batch's
       examples share runs once (KV cache), response-only loss with logits only where a
       response token follows, precision chosen automatically;
  (b') the same trainer with prefix sharing off (padding-free packed rows) — for reference.

Reported per variant: real (non-pad) tokens/s — the tokens of the examples
themselves, whatever the loss covers —, supervised tokens/s, positions the model
ran per real token (above 1: padding; below 1: shared prefixes), peak RSS, and
held-out response loss afterwards (same rows, same metric). The claim is the
ratio b / a of real tokens/s, measured in this run. Run with `make bench`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from barbarossa import config, storage
from barbarossa.console import console
from barbarossa.data import instructions, tokencache
from barbarossa.engine import loading
from barbarossa.evaluate import protocol
from barbarossa.models import roster
from barbarossa.train import loop

STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", 6))
BATCH = 8
MAX_LENGTH = 256
EVAL_ROWS = 32


def settings_of(item: dict, train: dict) -> config.Profile:
    """The item's settings as the flow resolves them, from this benchmark's [train] table."""
    return config.Profile.from_tables("bench", train=train).for_item(item)


CFG = {
    "max_steps": STEPS,
    "batch_size": BATCH,
    "grad_accum": 1,
    "learning_rate": 2e-3,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": MAX_LENGTH,
    "precision": "auto",
    "seed": 0,
    "log_every": STEPS,
    "packing": True,
    "gradient_checkpointing": False,
    "checkpoint_every": 0,
}


class PeakRSS:
    """Highest resident set size seen while the block runs (sampled from /proc every 50 ms)."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            with open("/proc/self/status") as status:
                rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
            self.peak = max(self.peak, rss * 1024)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def matmul_peak(dtype, size: int = 1024, seconds: float = 2.0) -> float:
    """Measured dense matmul FLOP/s of this machine for `dtype`."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started)


def held_out_loss(model, tokenizer, held: list[dict]) -> float:
    model.eval()
    loss, _ = protocol.response_loss(model, tokenizer, held, MAX_LENGTH, 8)
    return loss


def hf_trainer(candidate, train_uri: str, held: list[dict], pad_to_max: bool) -> dict:
    """(a) / (a'): the HF Trainer recipe most tutorials use."""
    import torch
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer, model = loading.load_base(asdict(candidate.base))
    torch.manual_seed(0)
    model = loop.lora_model(model, candidate.base.family, asdict(candidate.lora))
    examples, _ = tokencache.tokenize(tokenizer, instructions.read_jsonl(train_uri), MAX_LENGTH)
    rows = Dataset.from_list([{"input_ids": e["input_ids"]} for e in examples])
    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm=False, pad_to_multiple_of=MAX_LENGTH if pad_to_max else None
    )
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        max_steps=STEPS,
        per_device_train_batch_size=BATCH,
        learning_rate=CFG["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=1,
        max_grad_norm=1.0,
        weight_decay=0.0,
        logging_steps=STEPS,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    seen = {"real": 0, "padded": 0}

    class Counting(Trainer):
        """Counts the tokens the model is actually given (the data loader fetches one batch ahead)."""

        def compute_loss(self, model, inputs, *rest, **options):
            seen["real"] += int(inputs["attention_mask"].sum())
            seen["padded"] += inputs["input_ids"].numel()
            return super().compute_loss(model, inputs, *rest, **options)

    trainer = Counting(model=model, args=args, train_dataset=rows, data_collator=collator)
    with PeakRSS() as rss:
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "real": seen["real"],
        "supervised": seen["real"],
        "computed": seen["padded"],
        "rss": rss.peak,
        "loss": held_out_loss(model, tokenizer, held),
    }


def ours(candidate, summary: dict, held: list[dict], share_prefix: bool = True) -> dict:
    """(b) / (b'): the project's trainer, exactly as the flow calls it."""
    from peft import PeftModel

    item = {"name": candidate.name, "kind": "candidate", "base": asdict(candidate.base), "lora": asdict(candidate.lora)}
    with tempfile.TemporaryDirectory() as out:
        with PeakRSS() as rss:
            result = loop.train(item, summary, settings_of(item, {**CFG, "share_prefix": share_prefix}), out).result
        tokenizer, model = loading.load_base(item["base"])
        model = PeftModel.from_pretrained(model, storage.local_dir(result["adapter_uri"]))
        loss = held_out_loss(model, tokenizer, held)
    return {
        "seconds": result["loop_seconds"],
        "real": result["real_tokens"],
        "supervised": result["supervised_tokens"],
        "computed": round(result["real_tokens"] * result["computed_per_real_token"]),
        "rss": rss.peak,
        "loss": loss,
        "precision": result["precision"],
        "layout": result["layout"],
    }


def main() -> None:
    import torch

    candidate = roster.all_rosters()["local"].candidates[0]
    with tempfile.TemporaryDirectory() as tmp:
        summary = instructions.prepare(str(instructions.BUNDLED), None, tmp, eval_fraction=0.1, seed=0)
        held = instructions.read_jsonl(summary["eval_uri"])[:EVAL_ROWS]
        loading.load_base(asdict(candidate.base))  # convert the GGUF once, outside every timing
        warm = {"name": "warm-up", "kind": "candidate", "base": asdict(candidate.base), "lora": asdict(candidate.lora)}
        with tempfile.TemporaryDirectory() as out:  # one untimed step: the first one pays for allocator/kernel warm-up
            loop.train(warm, summary, settings_of(warm, {**CFG, "max_steps": 1}), out)
        console.print(
            f"training, {candidate.name} ({candidate.lora.targets}, r={candidate.lora.r}), {STEPS} steps × "
            f"batch {BATCH}, max length {MAX_LENGTH}, {torch.get_num_threads()} threads"
        )
        runs = {
            "(b)  barbarossa (shared prefix, resp.-only)": ours(candidate, summary, held),
            "(b') barbarossa, no prefix sharing (packed)": ours(candidate, summary, held, share_prefix=False),
            "(a)  HF Trainer, dynamic padding": hf_trainer(candidate, summary["train_uri"], held, pad_to_max=False),
            "(a') HF Trainer, pad to max length": hf_trainer(candidate, summary["train_uri"], held, pad_to_max=True),
        }
    fp32, bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    params = candidate.base.params
    console.print(
        f"{'variant':44} {'real tok/s':>10} {'superv. tok/s':>13} {'pos./token':>10} {'peak RSS':>9} "
        f"{'held-out loss':>13}"
    )
    for name, r in runs.items():
        console.print(
            f"{name:44} {r['real'] / r['seconds']:10.0f} {r['supervised'] / r['seconds']:13.0f} "
            f"{r['computed'] / r['real']:10.2f} {r['rss'] / 2**30:7.2f} G {r['loss']:13.3f}"
        )
    b, b_packed, a, a_max = runs.values()
    speed = lambda r: r["real"] / r["seconds"]  # noqa: E731
    console.print(
        f"[bold]b / a  = {speed(b) / speed(a):.2f}×[/] real tokens/s (b / a' = {speed(b) / speed(a_max):.2f}×, "
        f"b' / a = {speed(b_packed) / speed(a):.2f}×, b / b' = {speed(b) / speed(b_packed):.2f}×); "
        f"held-out loss b {b['loss']:.3f} vs a {a['loss']:.3f} after the same {STEPS * BATCH} examples"
    )
    flops = 4 * params * speed(b)
    console.print(
        f"b runs at {flops / 1e9:.1f} GFLOP/s (4 × {params / 1e6:.0f}M params × tokens/s) in {b['precision']}: "
        f"{flops / bf16:.1%} of this machine's measured bf16 matmul peak ({bf16 / 1e9:.1f} GFLOP/s), "
        f"{flops / fp32:.1%} of its fp32 peak ({fp32 / 1e9:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
