"""`make gpu-check`'s correctness half: does each speed lever train what the trainer trains with it off?

Why: "auto" takes a lever on a GPU only where a kept report says it passed here
(`barbarossa/engine/levers.py` reads `levers` from `benchmarks/results/*.json`).
So each lever is run alone, with every other one off, on the same model, rows
and seed as a levers-off baseline, then all together, and passes when

- it ran: no error, and the trainer's first-step guard did not turn it off;
- its loss curve matches the baseline's: at every logged step within
  `CURVE_TOLERANCE`, and the final loss within `FINAL_TOLERANCE` (relative; bf16
  compute on both sides, LoRA dropout 0, so only rounding separates them);
- what it trained matches: the LoRA B weights (zero at the start, so they are the
  sum of the updates) within `UPDATE_TOLERANCE` of the baseline's (relative L2).
  A random-weight model's loss sits near log(vocabulary) and moves little in a
  few steps, so the curve alone would miss a wrong gradient or a lost update;
  the weights do not;
- for Liger's kernels, the fused linear cross-entropy also matches the unfused
  loss *with gradients on* (the only place it runs: the evaluation's no-grad
  passes never use it): the loss within `FINAL_TOLERANCE`, every LoRA gradient
  within `GRADIENT_TOLERANCE` (relative L2).

A lever that cannot run on this machine (Liger or flash-attn not installed,
FlexAttention's missing CPU backward, compiling on a CPU) is `skipped`, never
passed. `failures` lists what failed; bench_gpu exits non-zero on any.
"""

from __future__ import annotations

import tempfile

import torch

from barbarossa import config
from barbarossa.data import instructions, prompts
from barbarossa.engine import kernels, levers, runtime
from barbarossa.train import loop

CURVE_TOLERANCE = 0.02  # relative, at every logged step
FINAL_TOLERANCE = 0.01  # relative, final loss (and the fused loss against the unfused one)
GRADIENT_TOLERANCE = 0.05  # relative L2 difference of the LoRA gradients, fused loss against unfused
UPDATE_TOLERANCE = 0.1  # relative L2 difference of the trained LoRA B weights (Adam's first steps are ~sign(g))
OFF = {"compile": False, "kernels": "torch", "attention": "sdpa", "adapter_dtype": "fp32"}
# one setting per checked lever (levers.CHECKED), asked for by name
ON = {
    "adapter_dtype": {"adapter_dtype": "bf16"},
    "compile": {"compile": True},
    "flex_attention": {"attention": "flex_attention"},
    "flash_attention_2": {"attention": "flash_attention_2"},
    "kernels": {"kernels": "liger"},  # last: Liger patches transformers' classes for the whole process
}


def unavailable(lever: str, cuda: bool) -> str:
    """Why `lever` cannot be checked on this machine; "" when it can."""
    reasons = {
        "compile": "" if cuda else "a CPU check compiles nothing (inductor builds C++ kernels for minutes)",
        "flex_attention": "" if cuda else "FlexAttention has no backward on a CPU",
        "flash_attention_2": "" if cuda and runtime.installed("flash_attn") else "needs CUDA and flash-attn",
        "kernels": "" if cuda and runtime.installed("liger_kernel") else "needs CUDA and liger-kernel",
    }
    return reasons.get(lever, "")


def lora_updates(trained: loop.Trained) -> torch.Tensor:
    """The LoRA B weights, in fp32 on the CPU: zero before training, so what every update added up to."""
    return torch.cat(
        [p.detach().float().reshape(-1).cpu() for name, p in trained.model.named_parameters() if "lora_B" in name]
    )


def compare(curve: list[dict], baseline: list[dict], updates=None, baseline_updates=None) -> dict:
    """The largest relative difference of two loss curves at their common steps, of their final losses, and of
    what they trained (the LoRA updates)."""
    base = {point["step"]: point["loss"] for point in baseline}
    steps = [point for point in curve if point["step"] in base]
    worst = max((abs(p["loss"] - base[p["step"]]) / abs(base[p["step"]]) for p in steps), default=float("inf"))
    final = abs(curve[-1]["loss"] - baseline[-1]["loss"]) / abs(baseline[-1]["loss"]) if curve else float("inf")
    update = float("inf")
    if updates is not None and baseline_updates is not None and updates.shape == baseline_updates.shape:
        update = float((updates - baseline_updates).norm() / baseline_updates.norm().clamp_min(1e-12))
    return {
        "max_curve_difference": round(worst, 6),
        "final_difference": round(final, 6),
        "update_difference": round(update, 6),
        "final_loss": curve[-1]["loss"] if curve else None,
        "matches": worst <= CURVE_TOLERANCE and final <= FINAL_TOLERANCE and update <= UPDATE_TOLERANCE,
    }


def train(folder, split: dict, train_cfg: dict, lora: dict, switches: dict) -> loop.Trained:
    """The bench's LLaMA folder trained by the product's trainer with `switches` over the levers-off settings."""
    item = {
        "name": "lever-check",
        "kind": "candidate",
        "lora": {**lora, "dropout": 0.0},
        "base": {"name": "lever-check", "source": str(folder), "family": "llama", "max_length": 2048},
    }
    table = {**train_cfg, **OFF, **switches, "precision": "bf16", "log_every": 1}
    settings = config.Profile.from_tables("lever-check", train=table).for_item(item)
    return loop.train(item, split, settings, tempfile.mkdtemp(prefix="lever-check-"))


def check_one(lever: str, folder, split, train_cfg, lora, baseline: tuple, fused_check) -> dict:
    """One lever (or "all") against the baseline: ran, matched, and for Liger the fused loss with gradients."""
    switches = {key: value for name in lever.split("+") for key, value in ON[name].items()} if lever != "off" else {}
    try:
        trained = train(folder, split, train_cfg, lora, switches)
    except Exception as error:  # a lever that cannot run at all is a failed check, with its reason
        return {"ran": False, "passed": False, "error": levers.reason(error)}
    fallbacks = trained.result["runtime"].get("fallbacks") or {}
    row = {
        "ran": not fallbacks,
        **compare(trained.result["loss_curve"], baseline[0], lora_updates(trained), baseline[1]),
    }
    if fallbacks:
        row["error"] = "; ".join(f"{name} turned off at the first step: {why}" for name, why in fallbacks.items())
    if "kernels" in lever.split("+") and not fallbacks:
        row["fused_loss"] = fused_check(trained, split, train_cfg["max_length"])
    row["passed"] = row["ran"] and row["matches"] and row.get("fused_loss", {}).get("passed", True)
    del trained
    free()
    return row


def run(folder, split: dict, train_cfg: dict, lora: dict, cuda: bool, gpu: str) -> dict:
    """Every lever this machine can run, alone and then together, against one levers-off baseline: the record."""
    trained = train(folder, split, train_cfg, lora, {})
    baseline = (trained.result["loss_curve"], lora_updates(trained))
    del trained
    free()
    checked, runnable = {}, []
    for lever in ON:
        why = unavailable(lever, cuda)
        if why:
            checked[lever] = {"ran": False, "passed": False, "skipped": why}
            continue
        checked[lever] = check_one(lever, folder, split, train_cfg, lora, baseline, fused_loss_check)
        runnable.append(lever)
    together = [lever for lever in runnable if lever != "flex_attention" or "flash_attention_2" not in runnable]
    if len(together) > 1:  # the levers a verified GPU takes at once (one attention kernel)
        checked["all"] = check_one("+".join(together), folder, split, train_cfg, lora, baseline, fused_loss_check)
        if not checked["all"]["passed"]:
            for lever in together:  # each passed alone but not with the others: none is proven
                checked[lever] = {**checked[lever], "passed": False, "note": "failed together with the others"}
    return {
        "gpu": gpu,
        "gpu_class": levers.gpu_class(gpu) if cuda else "cpu",
        "torch": torch.__version__,
        "tolerance": {
            "curve": CURVE_TOLERANCE,
            "final": FINAL_TOLERANCE,
            "update": UPDATE_TOLERANCE,
            "gradient": GRADIENT_TOLERANCE,
        },
        "steps": train_cfg["max_steps"],
        "baseline_final_loss": baseline[0][-1]["loss"],
        "checked": checked,
    }


def fused_loss_check(trained: loop.Trained, split: dict, max_length: int) -> dict:
    """The fused linear cross-entropy against the unfused loss on one packed batch, with gradients on."""
    model, tokenizer, decision = trained.model, trained.tokenizer, trained.runtime
    base = kernels.base_of(model)
    fused = kernels.fused_linear_cross_entropy(model)
    if fused is None:
        return {"passed": False, "error": "the trained model has no fused loss to check"}
    built = (prompts.build_example(tokenizer, r, max_length) for r in instructions.read_jsonl(split["train_uri"]))
    examples = [e for e in built if e and any(label != prompts.IGNORE_INDEX for label in e["labels"])][:4]
    if not examples:
        return {"passed": False, "error": f"no training row leaves a response within max_length={max_length}"}
    batch = loop.make_batch(
        "packed",
        examples,
        max_length,
        tokenizer.pad_token_id,
        decision.device,
        packing=loop.packing_of(decision, max_length),
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def loss_and_gradients() -> tuple[float, torch.Tensor]:
        for p in trainable:
            p.grad = None
        with runtime.autocast(decision):
            loss = loop.batch_loss(model, batch)
        if loss.requires_grad:  # a loss cut off from the LoRA weights trains nothing: zero gradients, compared
            loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable]
        return float(loss.detach()), torch.cat([g.float().reshape(-1) for g in grads])

    fused_loss, fused_grads = loss_and_gradients()
    base.fused_linear_cross_entropy = None
    try:
        plain_loss, plain_grads = loss_and_gradients()
    finally:
        base.fused_linear_cross_entropy = fused
    loss_difference = abs(fused_loss - plain_loss) / abs(plain_loss)
    gradient_difference = float((fused_grads - plain_grads).norm() / plain_grads.norm().clamp_min(1e-12))
    return {
        "loss_difference": round(loss_difference, 6),
        "gradient_difference": round(gradient_difference, 6),
        "passed": loss_difference <= FINAL_TOLERANCE and gradient_difference <= GRADIENT_TOLERANCE,
    }


def failures(record: dict) -> list[str]:
    """One line per check that ran and failed (a skipped lever is not a failure: it is simply not verified)."""
    lines = []
    for lever, row in record["checked"].items():
        if row.get("skipped") or row["passed"]:
            continue
        detail = (
            row.get("error")
            or row.get("note")
            or (
                f"trains something else: LoRA updates {row['update_difference']:.2%} off, loss curve up to "
                f"{row['max_curve_difference']:.2%} (final {row['final_difference']:.2%}; tolerance "
                f"{UPDATE_TOLERANCE:.0%} / {CURVE_TOLERANCE:.0%} / {FINAL_TOLERANCE:.0%})"
            )
        )
        if row.get("fused_loss") and not row["fused_loss"]["passed"]:
            detail += f"; fused loss with gradients: {row['fused_loss']}"
        lines.append(f"{lever}: {detail}")
    return lines


def free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
