"""The peer trainer of `make gpu-check`: the same LoRA fine-tune run through TRL's `SFTTrainer`.

Why: `SFTTrainer` is the trainer most people run first, so this project's tokens/s
only means something next to it, measured in the same run on the same card.

Kept equal to the product's case: the model folder (the saved LLaMA + tokenizer
that bench_gpu builds), the training rows (`split["train_uri"]`, less the rows
the product drops because the prompt leaves no room for an answer), the prompt
template (`barbarossa.data.prompts`, loss on the response + EOS only), the LoRA
(r, alpha, dropout, targets), batch size, gradient accumulation, max length,
steps, peak learning rate, warm-up, cosine decay to 10 % of the peak, weight
decay, gradient clipping, seed, dtype (bf16 on CUDA) and no gradient
checkpointing (SFTConfig turns it on by default).
Not kept equal, on purpose: TRL's own tokenisation, packing, collation, loss
(its fused LM head, plus the entropy / token accuracy it logs every step) and
optimizer defaults — that is the peer as people run it. Also not identical:
transformers' warm-up starts at lr 0 (the product's at peak/warmup), and on a
CPU the peer runs fp32 unless `dtype="bf16"` is passed (the product takes bf16
where the CPU has it natively); on CUDA both run bf16.

Padding-free in TRL 1.16: `padding_free=True` alone refuses a set `max_length`
(it would not be enforced), so the peer uses `packing=True,
packing_strategy="bfd"`: each tokenised example is cut to `max_length` (keep
start), examples are packed best-fit-decreasing into rows of `max_length`, and
bfd turns padding-free on by itself (`padding_free=True` is passed as well, to
say so): the collator concatenates a batch's rows into one sequence with
`position_ids` restarting per example and no attention mask (sdpa gets a
block-diagonal mask from those position ids, flash-attention-2 the `cu_seq_lens`).
`per_device_train_batch_size` therefore counts packed rows of `max_length`; with
bench_gpu's rows (each longer than `max_length`) a row is one example, the same
tokens per step as the product's batch.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
import time
from pathlib import Path

import torch

from barbarossa.data import instructions, prompts
from barbarossa.models.families import get_family

LIGER_UNAVAILABLE = "needs CUDA and liger-kernel"


def _imports(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        return False
    try:
        __import__(module)
    except Exception:
        return False
    return True


def trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


def liger_available() -> bool:
    return torch.cuda.is_available() and _imports("liger_kernel")


def prompt_completion_rows(records: list[dict], template=None) -> list[dict]:
    """TRL's prompt/completion rows in this project's template; TRL appends EOS to each completion and,
    for prompt/completion data, puts the loss on the completion only (`completion_only_loss=None`)."""
    return [
        {"prompt": prompts.render_prompt(r["instruction"], r["input"], template), "completion": r["output"]}
        for r in records
    ]


class StepClock:
    """`TrainerCallback`: wall time and tokens seen at the end of each optimizer step (CUDA synchronised)."""

    def __init__(self, counts: dict):
        from transformers import TrainerCallback

        clock = self
        self.counts, self.at = counts, {}

        class _Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                clock.at[state.global_step] = (time.perf_counter(), clock.counts["real"], clock.counts["positions"])

        self.callback = _Callback()

    def window(self) -> tuple[int, float, int, int]:
        """Steps, seconds, real tokens and positions from the end of step 1 (warm-up) to the last step."""
        first, last = min(self.at), max(self.at)
        (t0, r0, p0), (t1, r1, p1) = self.at[first], self.at[last]
        return last - first, t1 - t0, r1 - r0, p1 - p0


def _counting_trainer(counts: dict):
    """SFTTrainer that counts each micro-batch's real tokens and computed positions as it trains on it.

    Counted here rather than in a wrapped collator: the dataloader collates ahead of the step, and
    TRL refuses a custom collator with padding-free. A padding-free batch is one row without padding
    (pad_to_multiple_of stays None off Neuron), so every position is a real token there.
    """
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        def training_step(self, model, inputs, *args, **kwargs):
            positions = inputs["input_ids"].numel()
            mask = inputs.get("attention_mask")
            counts["positions"] += positions
            counts["real"] += int(mask.sum()) if mask is not None else positions
            return super().training_step(model, inputs, *args, **kwargs)

    return CountingSFTTrainer


def build_trainer(
    folder: Path, split: dict, cfg: dict, lora: dict, liger: bool = False, template=None, dtype: str | None = None
):
    """The SFTTrainer of the peer case, ready to train: (trainer, clock, facts for the row)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    dtype = dtype or ("bf16" if cuda else "fp32")
    attention = "flash_attention_2" if cuda and _imports("flash_attn") else "sdpa"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=torch.bfloat16 if dtype == "bf16" else torch.float32,
        attn_implementation=attention,
        device_map="cuda" if cuda else None,
    )  # straight onto the GPU: a 7B model does not stop in host memory first
    params = sum(p.numel() for p in model.parameters())
    targets = lora["targets"]
    targets = get_family("llama").lora_targets(list(targets) if isinstance(targets, (list, tuple)) else targets)
    peft_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        bias="none",
        target_modules=targets,
    )
    records = instructions.read_jsonl(split["train_uri"])
    # the product's rows: it drops a row whose prompt leaves under 8 response tokens (TRL would keep it, cut, unscored)
    kept = prompts.build_examples(tokenizer, records, cfg["max_length"], template=template)
    rows = prompt_completion_rows([r for r, example in zip(records, kept) if example], template)
    seed = cfg.get("seed", 0)
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="peer-trl-"),
        packing=True,
        packing_strategy="bfd",
        padding_free=True,  # padding-free position-id packing (module doc)
        max_length=cfg["max_length"],
        per_device_train_batch_size=cfg["batch_size"],
        gradient_accumulation_steps=cfg.get("grad_accum", 1),
        max_steps=cfg["max_steps"],
        learning_rate=cfg["learning_rate"],
        warmup_steps=cfg.get("warmup_steps", 0),
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},  # the product's schedule
        weight_decay=cfg.get("weight_decay", 0.0),
        max_grad_norm=cfg.get("max_grad_norm", 1.0),
        bf16=dtype == "bf16",
        fp16=False,
        # SFTConfig defaults gradient_checkpointing (transformers 5.24's deprecated alias) to True: set the new name
        activation_checkpointing=cfg.get("gradient_checkpointing") is True,
        use_liger_kernel=liger,
        logging_steps=cfg.get("log_every", 10),
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        dataloader_drop_last=True,
        seed=seed,
        data_seed=seed,
    )
    counts = {"real": 0, "positions": 0}
    clock = StepClock(counts)
    trainer = _counting_trainer(counts)(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[clock.callback],
    )
    optim = getattr(args.optim, "value", args.optim)
    facts = {
        "params": params,
        "settings": {
            "padding_free": trainer.padding_free,
            "packing": args.packing_strategy,
            "liger": liger,
            "attention": attention,
            "dtype": dtype,
            "optim": optim,
            "checkpointing": bool(args.activation_checkpointing),
        },
    }
    return trainer, clock, facts


def train_peer(
    folder: Path,
    split: dict,
    cfg: dict,
    lora: dict,
    liger: bool,
    peak_tflops: float | None,
    template=None,
    name: str | None = None,
    dtype: str | None = None,
) -> dict:
    """Train the LoRA of the product's case with TRL's SFTTrainer; a row shaped like bench_gpu's training rows.

    name: the case's shape (default: the folder's name, as bench_gpu names them); dtype: "bf16" or
    "fp32", by default bf16 on CUDA and fp32 on the CPU. With `liger` and no CUDA or no liger-kernel
    the row says "skipped" and nothing trains. Throughput is timed from the end of step 1 to the last step.
    """
    folder = Path(folder)
    case = f"{name or folder.name} LoRA, TRL SFTTrainer{', liger' if liger else ''}"
    trainer_name = f"trl {trl_version()}"
    if liger and not liger_available():
        return {"case": case, "trainer": trainer_name, "skipped": LIGER_UNAVAILABLE}
    trainer, clock, facts = build_trainer(folder, split, cfg, lora, liger, template, dtype)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    steps, seconds, real, positions = clock.window()
    if steps < 1:
        raise ValueError(f"{case}: max_steps={cfg['max_steps']} leaves no step after the first to time")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    flops_per_position = (6 if facts["settings"]["checkpointing"] else 4) * facts["params"]  # bench_gpu's MFU
    return {
        "case": case,
        "trainer": trainer_name,
        **facts,
        "step_seconds": round(seconds / steps, 4),
        "real_tokens_per_second": round(real / seconds, 1),
        "positions_per_second": round(positions / seconds, 1),
        "mfu": round(flops_per_position * positions / seconds / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "final_loss": losses[-1] if losses else math.nan,
    }
