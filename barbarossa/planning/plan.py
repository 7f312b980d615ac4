"""What a run will cost before it is spent: tokens, GPU-hours and peak GPU memory per candidate.

The plan and the trainer make the same decision: `candidate_plan` asks
`runtime.decide` — the function every task calls on its own hardware — what it
would do on the named GPU (weight dtype, 4-bit or not, gradient checkpointing),
and prices exactly that. A candidate the trainer could not run there is
marked "no" (and `start` refuses it before any compute).

Back-of-envelope numbers with every assumption stated in `ASSUMPTIONS`:
- tokens  = steps × batch × grad_accum × max_length (an upper bound: real
  examples are shorter than max_length);
- FLOPs   = 4 × params × tokens for LoRA (forward 2N, backward through frozen
  weights 2N; no weight gradients), 6N with gradient checkpointing (the
  forward runs twice);
- hours   = FLOPs ÷ (GPU bf16 dense peak × MFU);
- memory  = weights (2 B/param in bf16/fp16, 4 in fp32; nf4: ~0.52 B/param for
  the linear layers, embeddings and head in fp32 after k-bit preparation)
  + LoRA weights, gradients and AdamW state (16 B per trainable param)
  + activations (per token and layer: `Family.activation` bytes, measured by
  counting the tensors autograd saves, see tests/planning/test_plan.py; with
  checkpointing only each layer's input plus one layer's worth)
  + fp32 logits of the response tokens only (the trainer never builds the
  rest) + CUDA context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from barbarossa.config import EarlyStopping, Profile, Train
from barbarossa.engine import loading, runtime
from barbarossa.models.families import get_family
from barbarossa.models.roster import Candidate, format_params
from barbarossa.planning import calibration

# name -> (bf16 dense peak TFLOP/s (fp16 where bf16 is emulated), memory GB, native bf16)
GPUS = {
    "T4": (65, 16, False),
    "V100": (125, 32, False),
    "A10G": (125, 24, True),
    "L4": (121, 24, True),
    "A100-40GB": (312, 40, True),
    "A100-80GB": (312, 80, True),
    "H100-80GB": (989, 80, True),
    "H200-141GB": (989, 141, True),
}
MFU = 0.35
CONTEXT_GB = 1.0  # CUDA context + cuBLAS workspace: outside PyTorch's allocator statistics
RESPONSE_SHARE = 0.5  # share of an example's tokens that are response (logits are built for these only)
LOGIT_BYTES = 10  # per response token and vocabulary entry: bf16 logits, their fp32 copy, fp32 gradient
NF4_BYTES = 0.52  # 4-bit weights + double-quantised absmax per parameter of a quantised linear layer
OPTIMIZER_BYTES = 16  # fp32 LoRA weight + gradient + two AdamW moments
ASSUMPTIONS = (
    f"tokens = steps × batch × grad_accum × max_length (upper bound); LoRA FLOPs = 4 × params × tokens "
    f"(6 × with gradient checkpointing); MFU {MFU:.0%} of the GPU's bf16 dense peak; memory = weights in the "
    f"trainer's dtype (nf4 {NF4_BYTES} B/param, embeddings fp32) + {OPTIMIZER_BYTES} B per LoRA param + "
    f"activations per token and layer measured per family (checkpointed: layer inputs + one layer) + fp32 "
    f"logits of response tokens ({RESPONSE_SHARE:.0%} of each example) + {CONTEXT_GB} GB CUDA context; "
    f"layers/hidden/vocab estimated from params unless the model's config is at hand"
)


@dataclass(frozen=True)
class Shape:
    """The dimensions memory depends on."""

    params: float
    layers: int
    hidden: int
    heads: int
    vocab: int
    intermediate: int


def shape_of(params: float, vocab: int = 50_000) -> Shape:
    """A typical decoder of this size, from N ≈ 12·L·d² (when the model's config is not at hand)."""
    layers = 12 if params < 3e8 else 24 if params < 2e9 else 32 if params < 9e9 else 40 if params < 2e10 else 60
    hidden = int(math.sqrt(params / (12 * layers)))
    return Shape(params, layers, hidden, max(1, hidden // 128), vocab, 4 * hidden)


def shape_from_config(config: dict, params: float) -> Shape:
    """The dimensions of a transformers config.json (the names differ by family)."""

    def first(*keys, default=None):
        for key in keys:
            if config.get(key) is not None:
                return config[key]
        return default

    hidden = first("hidden_size", "n_embd", "d_model")
    layers = first("num_hidden_layers", "n_layer", "num_layers", "n_layers")
    if config.get("is_encoder_decoder"):
        layers = layers + first("num_decoder_layers", default=layers)
    heads = first("num_attention_heads", "n_head", "num_heads", "n_heads")
    intermediate = first("intermediate_size", "ffn_dim", "d_ff", "n_inner", default=None) or 4 * hidden
    return Shape(params, int(layers), int(hidden), int(heads), int(config.get("vocab_size", 50_000)), int(intermediate))


def lora_params(shape: Shape, targets, r: int) -> int:
    """Trainable parameters: r × (in + out) per adapted projection (attention: 4 of d×d; all-linear adds the MLP)."""
    per_layer = 4 * r * 2 * shape.hidden
    if targets == "all-linear":
        per_layer += 3 * r * (shape.hidden + shape.intermediate)
    return per_layer * shape.layers


def activation_bytes_per_token(
    shape: Shape, family: str, targets, dropout: float, length: int, checkpointing: bool, quantized: bool = False
) -> float:
    """Bytes autograd keeps per token for the backward pass, over all layers.

    k-bit preparation (QLoRA) upcasts the embeddings and norms to fp32, so the
    residual stream — and with it each checkpointed layer input — is fp32
    (measured with `make gpu-check`: 7B QLoRA was 18 % over an estimate that
    assumed bf16 layer inputs).
    """
    per_hidden, per_head_and_position, all_linear = get_family(family).activation
    layer = shape.hidden * (per_hidden + (all_linear if targets == "all-linear" else 0))
    layer += per_head_and_position * shape.heads * length  # eager attention keeps the scores
    layer *= 1.1 if dropout > 0 else 1.0  # dropout masks and dropped copies of the adapted inputs
    residual = 4 if quantized else 2
    layer *= 1.25 if quantized else 1  # fp32 norms and residual adds: part of what a layer keeps is fp32
    if checkpointing:  # each layer's input, plus one layer recomputed at a time
        return residual * shape.hidden * shape.layers + layer
    return layer * shape.layers


def memory_parts(
    shape: Shape,
    family: str,
    *,
    batch: int,
    length: int,
    supervised: int,
    weight_dtype: str,
    quantization: str,
    checkpointing: bool,
    lora: dict,
) -> dict:
    """GB per component for one micro-batch of `batch` × `length` tokens, `supervised` of them response tokens."""
    bytes_per = {"bf16": 2, "fp16": 2, "fp32": 4}[weight_dtype]
    embeddings = shape.vocab * shape.hidden * 2  # input embeddings + LM head (counted untied: the worst case)
    if quantization == "nf4":
        weights = (shape.params - embeddings) * NF4_BYTES + embeddings * 4
    else:
        weights = shape.params * bytes_per
    trainable = lora_params(shape, lora.get("targets", "attention"), lora.get("r", 16))
    activations = (
        batch
        * length
        * activation_bytes_per_token(
            shape,
            family,
            lora.get("targets", "attention"),
            lora.get("dropout", 0.0),
            length,
            checkpointing,
            quantized=quantization == "nf4",
        )
    )
    logits = supervised * shape.vocab * LOGIT_BYTES
    parts = {
        "weights": weights,
        "lora_and_optimizer": trainable * OPTIMIZER_BYTES,
        "activations": activations,
        "logits": logits,
    }
    return {key: round(value / 1e9, 3) for key, value in parts.items()}


def need_fn(shape: Shape, family: str, train: Train, lora: dict, length: int):
    """`runtime.decide`'s memory_need: total GB (with CUDA context) for a dtype / quantisation / checkpointing
    choice."""
    batch = train.batch_size
    supervised = int(batch * length * RESPONSE_SHARE)

    def need(weight_dtype: str, quantization: str, checkpointing: bool) -> float:
        parts = memory_parts(
            shape,
            family,
            batch=batch,
            length=length,
            supervised=supervised,
            weight_dtype=weight_dtype,
            quantization=quantization,
            checkpointing=checkpointing,
            lora=lora,
        )
        return sum(parts.values()) + CONTEXT_GB

    return need


def gpu_hardware(gpu: str, declared_gb: float | None = None) -> runtime.Hardware:
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    _, memory, bf16 = GPUS[gpu]
    budget = min(memory, declared_gb) if declared_gb else memory
    return runtime.Hardware("cuda", gpu, budget, bf16)


def fits_label(decision: runtime.Runtime, need_gb: float, budget_gb: float) -> str:
    if need_gb > budget_gb:
        return "no"
    label = "QLoRA" if decision.quantization == "nf4" else "LoRA"
    return label + (" + checkpointing" if decision.gradient_checkpointing else "")


def candidate_plan(
    candidate: Candidate,
    profile: Profile,
    gpu: str,
    shape: Shape | None = None,
    calibrated: calibration.Calibration | None = None,
) -> dict:
    peak_tflops = GPUS.get(gpu, (0,))[0]
    base = candidate.base
    cfg = profile.resolved(candidate.train, base.max_length).train
    length = cfg.max_length
    shape = shape or shape_of(base.params)
    lora = asdict(candidate.lora)
    need = need_fn(shape, base.family, cfg, lora, length)
    hardware = gpu_hardware(gpu, base.resources.gpu_memory_gb)
    decision = runtime.decide(hardware, cfg, asdict(base), need)
    need_gb = need(decision.weight_dtype, decision.quantization, decision.gradient_checkpointing)
    tokens = cfg.max_steps * cfg.batch_size * cfg.grad_accum * length
    flops_per_token = (6 if decision.gradient_checkpointing else 4) * base.params
    mfu = calibration.mfu_at(calibrated, base.params, decision.quantization) if calibrated else MFU
    hours = flops_per_token * tokens / (peak_tflops * 1e12 * mfu) / 3600
    return {
        "name": candidate.name,
        "base": base.name,
        "params": base.params,
        "tokens": tokens,
        "max_length": length,
        "gpu": gpu,
        "gpu_hours": round(hours, 3),
        "mfu": round(mfu, 4),
        "lora_gb": round(need(decision.weight_dtype, "none", False), 1),
        "qlora_gb": round(need(decision.weight_dtype, "nf4", True), 1),
        "planned_gb": round(need_gb, 1),
        "declared_gpu_gb": base.resources.gpu_memory_gb,
        "runtime": {k: v for k, v in decision.as_dict().items() if k not in ("hardware", "attention")},
        "fits": fits_label(decision, need_gb, hardware.memory_gb * runtime.HEADROOM),
    }


def build(
    candidates: list[Candidate],
    profile: Profile,
    gpu: str = "A100-80GB",
    calibrated: calibration.Calibration | None = None,
) -> dict:
    """Per-candidate rows plus totals: JSON-able, recorded by the flow's start step.

    `calibrated`: MFU per model size measured by `make gpu-check` (calibration.measured()); else MFU is assumed.
    """
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    rows = [candidate_plan(c, profile, gpu, calibrated=calibrated) for c in candidates]
    return {
        "gpu": gpu,
        "rows": rows,
        "total_tokens": sum(r["tokens"] for r in rows),
        "total_gpu_hours": round(sum(r["gpu_hours"] for r in rows), 2),
        "not_fitting": [r["name"] for r in rows if r["fits"] == "no"],
        "early_stopping_saving": early_stopping_saving(profile.early_stopping, profile.train.max_steps),
        "assumptions": ASSUMPTIONS.replace(
            f"MFU {MFU:.0%} of the GPU's bf16 dense peak", calibrated.describe() + " (of the GPU's bf16 dense peak)"
        )
        if calibrated
        else ASSUMPTIONS,
    }


def refusals(result: dict) -> dict[str, str]:
    """{candidate: reason} for every candidate the trainer could not run on the planned GPU."""
    return {
        row["name"]: (
            f"does not fit the {row['gpu']} box ({min(row['declared_gpu_gb'], GPUS[row['gpu']][1])} GB): "
            f"{row['runtime']['why'] or 'needs ' + str(row['planned_gb']) + ' GB'}"
        )
        for row in result["rows"]
        if row["fits"] == "no"
    }


def describe(row: dict) -> list[str]:
    """Cells for a console table."""
    return [
        row["name"],
        format_params(row["params"]),
        f"{row['tokens']:,}",
        f"{row['gpu_hours']:.2f}",
        f"{row['lora_gb']:.1f}",
        f"{row['qlora_gb']:.1f}",
        f"{row['planned_gb']:.1f}",
        str(row["declared_gpu_gb"]),
        row["fits"],
    ]


def params_from_config(config: dict) -> float:
    """A parameter count when the roster entry gives none (12·L·d² + embeddings)."""
    shape = shape_from_config(config, 0)
    return 12 * shape.layers * shape.hidden**2 + 2 * shape.vocab * shape.hidden


def early_stopping_saving(early: EarlyStopping, max_steps: int) -> list[float] | None:
    """[least, most] share of the steps early stopping / fail-fast can save (None when off): a range, not a promise.

    Least: nothing (every candidate keeps improving). Most: every candidate stops at the first step the
    rules allow — fail-fast's first evaluation, or patience evaluations after a best at the first one.
    """
    every, steps = early.eval_every, max_steps
    if not early.enabled:
        return None
    earliest = []
    if early.patience:
        earliest.append(every * (early.patience + 1))
    if early.fail_fast_steps:
        earliest.append(math.ceil(early.fail_fast_steps / every) * every)
    if not earliest:
        return None
    return [0.0, round(max(0.0, 1 - min(earliest) / steps), 3)]


def runtime_for(item: dict, cfg: Train, folder, hardware: runtime.Hardware) -> runtime.Runtime:
    """A task's runtime decision: the rule `candidate_plan` applies, priced with the model's own config.json."""
    import json
    from pathlib import Path

    base = item["base"]
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    shape = shape_from_config(config, base.get("params") or params_from_config(config))
    need = need_fn(shape, base["family"], cfg, item.get("lora") or {}, cfg.max_length)
    return runtime.decide(hardware, cfg, base, need)


def decision_for_item(item: dict, cfg: Train, hardware: runtime.Hardware | None = None) -> runtime.Runtime:
    """A work item's runtime decision from the hardware (this process's, by default), its [train] settings
    (`Profile.for_item`) and the model's config."""
    base = item["base"]
    folder = loading.resolve(base["source"], base.get("revision"))
    return runtime_for(item, cfg, folder, hardware or runtime.probe())


def load_for_item(
    item: dict, cfg: Train, hardware: runtime.Hardware | None = None, decision: runtime.Runtime | None = None
):
    """(tokenizer, model, runtime) of a work item, with `decision` or the one `decision_for_item` makes: training
    and evaluation load through here. The runtime returned names the attention kernel the model really runs."""
    decision = decision or decision_for_item(item, cfg, hardware)
    tokenizer, model = loading.load_base(item["base"], decision)
    return tokenizer, model, replace(decision, attention=loading.attention_of(model))
