"""What a run will cost before it is spent: tokens, GPU-hours and peak GPU memory per candidate.

Back-of-envelope numbers with every assumption stated in `ASSUMPTIONS`, so a
reader can redo them:

- tokens  = steps × batch × grad_accum × max_length (an upper bound: real
  examples are shorter than max_length);
- FLOPs   = 4 × params × tokens for LoRA (forward 2N, backward through frozen
  weights 2N; no weight gradients) — 6N would be a full fine-tune;
- hours   = FLOPs ÷ (GPU bf16 dense peak × MFU);
- memory  = weights (2 bytes/param bf16 LoRA; ~0.55 bytes/param 4-bit QLoRA)
  + activations with gradient checkpointing (layer inputs kept, one layer
  recomputed) + fp32 logits + CUDA context.
"""

from __future__ import annotations

import math

from barbarossa.registry import Candidate, format_params

# name -> (bf16 dense peak TFLOP/s, memory GB)
GPUS = {
    "T4": (65, 16),
    "A10G": (125, 24),
    "L4": (121, 24),
    "A100-40GB": (312, 40),
    "A100-80GB": (312, 80),
    "H100-80GB": (989, 80),
    "H200-141GB": (989, 141),
}
MFU = 0.35
VOCAB = 50_000
CONTEXT_GB = 1.5
ASSUMPTIONS = (
    f"tokens = steps × batch × grad_accum × max_length (upper bound); LoRA FLOPs = 4 × params × tokens; "
    f"MFU {MFU:.0%} of the GPU's bf16 dense peak; memory = bf16 weights (2 B/param; QLoRA 0.55 B/param) + "
    f"checkpointed activations (2 B × batch × length × hidden × (layers + 34)) + fp32 logits "
    f"(vocab {VOCAB:,}) + {CONTEXT_GB} GB CUDA context; hidden/layers estimated from params (N ≈ 12·L·d²)"
)


def shape(params: float) -> tuple[int, int]:
    """(layers, hidden) of a typical decoder of this size, from N ≈ 12·L·d²."""
    layers = 12 if params < 3e8 else 24 if params < 2e9 else 32 if params < 9e9 else 40 if params < 2e10 else 60
    return layers, int(math.sqrt(params / (12 * layers)))


def peak_memory_gb(params: float, batch: int, length: int, quantized: bool) -> float:
    layers, hidden = shape(params)
    weights = params * (0.55 if quantized else 2.0)
    activations = 2 * batch * length * hidden * (layers + 34)
    logits = 4 * batch * length * VOCAB
    return (weights + activations + logits) / 1e9 + CONTEXT_GB


def candidate_plan(candidate: Candidate, train: dict, gpu: str) -> dict:
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    peak_tflops, gpu_memory = GPUS[gpu]
    base = candidate.base
    batch, length = train["batch_size"], min(train["max_length"], base.max_length)
    tokens = train["max_steps"] * batch * train.get("grad_accum", 1) * length
    hours = 4 * base.params * tokens / (peak_tflops * 1e12 * MFU) / 3600
    lora = peak_memory_gb(base.params, batch, length, quantized=False)
    qlora = peak_memory_gb(base.params, batch, length, quantized=True)
    declared = base.resources.gpu_memory_gb
    budget = min(declared, gpu_memory)
    return {
        "name": candidate.name,
        "params": base.params,
        "tokens": tokens,
        "gpu": gpu,
        "gpu_hours": round(hours, 3),
        "lora_gb": round(lora, 1),
        "qlora_gb": round(qlora, 1),
        "declared_gpu_gb": declared,
        "fits": "LoRA" if lora <= budget else "QLoRA only" if qlora <= budget else "no",
    }


def build(candidates: list[Candidate], train: dict, gpu: str = "A100-80GB") -> dict:
    """Per-candidate rows plus totals: JSON-able, recorded by the flow's start step."""
    rows = [candidate_plan(c, train, gpu) for c in candidates]
    return {
        "gpu": gpu,
        "rows": rows,
        "total_tokens": sum(r["tokens"] for r in rows),
        "total_gpu_hours": round(sum(r["gpu_hours"] for r in rows), 2),
        "not_fitting": [r["name"] for r in rows if r["fits"] == "no"],
        "assumptions": ASSUMPTIONS,
    }


def describe(row: dict) -> list[str]:
    """Cells for a console table."""
    return [row["name"], format_params(row["params"]), f"{row['tokens']:,}", f"{row['gpu_hours']:.2f}",
            f"{row['lora_gb']:.1f}", f"{row['qlora_gb']:.1f}", str(row["declared_gpu_gb"]), row["fits"]]
