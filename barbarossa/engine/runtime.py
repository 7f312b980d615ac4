"""The one runtime decision of a task: device, weight dtype, compute precision, attention, quantisation, checkpointing.

Made once per work item from three inputs — the hardware the task landed on,
the profile's [train] table (with the roster's per-candidate overrides) and the
roster base — and used by training, evaluation and release alike, so the model
is trained, scored and merged the same way. The decision is a small dict that
goes into the leaderboard row (`runtime`).

Rules, and why:
- CUDA whenever a GPU is visible; the CPU only when none is.
- precision "auto": bf16 weights and compute where the hardware runs bf16
  natively (Ampere and newer; a CPU with AMX / AVX512-BF16); fp16 weights and
  compute with loss scaling on GPUs that only emulate bf16 (T4, V100) — except
  families known to overflow in fp16 (T5), which stay fp32; fp32 on other CPUs.
  A profile may force "bf16" / "fp16" / "fp32" (tests force bf16 on this CPU).
- weights are loaded in the compute dtype: fp32 weights under autocast cost
  twice the memory and a cast of every frozen weight on every forward.
- quantization "nf4" (QLoRA: bitsandbytes 4-bit base, bf16/fp16 compute, k-bit
  training preparation); "auto" takes nf4 only when 16-bit LoRA would not fit
  the device even with gradient checkpointing, "none" never.
- gradient checkpointing "auto": only when the plan's memory estimate without
  it exceeds the device's memory (it costs a second forward pass).
- the step's speed levers, each "auto" by default: on CUDA, where a step is
  bound by kernel launches and casts rather than by matmuls (H200 profile:
  docs/gpu.md "GPU speed"), a lever is taken only where a kept `make gpu-check`
  report verified it on that class of GPU (`levers.py`): a lever no GPU has run
  must not fail a user's first fine-tune. A CPU step is bound by its matmuls, so
  there the CUDA levers are not taken; bf16 adapters, which the test suite checks
  on this CPU, follow bf16 compute. `not_taken` says why for each lever — never
  silently different — and `fallbacks` records a taken lever the trainer's
  first-step guard had to turn off:
  - adapter dtype: LoRA weights in bf16 beside bf16 base weights, fp32 master
    copies in the optimizer (`train/master.py`), so no fp32↔bf16 cast kernels
    per forward; fp16 and QLoRA keep fp32 adapters (loss scaling unscales fp32
    gradients; k-bit preparation runs the residual stream in fp32);
  - compile: each decoder layer through `torch.compile`, one compiled code
    object shared by all layers (regional), packed shapes bucketed;
  - kernels: Liger's fused RMSNorm, rotary and SwiGLU for the families it
    covers (LLaMA, Mistral), when `liger-kernel` is installed (the image);
  - attention for packed rows: flash-attn's variable-length kernel when it is
    installed, else FlexAttention's document mask (one long row, no dense
    mask), else SDPA with a dense block mask in rows of max_length.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field, replace

from barbarossa.config import Train
from barbarossa.engine import levers

HEADROOM = 0.9  # share of device memory a plan may fill: the allocator fragments, kernels take workspace
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class Hardware:
    """What a task landed on; `memory_gb` is the GPU's memory on CUDA, the box's RAM on a CPU."""

    device: str  # "cuda" | "cpu"
    name: str
    memory_gb: float
    bf16_native: bool


@dataclass(frozen=True)
class Runtime:
    device: str
    weight_dtype: str  # dtype of the frozen (non-quantised) weights: bf16 | fp16 | fp32
    compute: str  # autocast dtype of the forward pass: bf16 | fp16 | fp32 (fp16 adds loss scaling)
    quantization: str  # none | nf4
    gradient_checkpointing: bool
    attention: str  # requested attention kernel; the loaded model reports what it really runs
    hardware: str = ""
    why: str = ""  # the memory reasoning behind quantisation / checkpointing, in words
    adapter_dtype: str = "fp32"  # dtype of the LoRA weights in the forward pass
    master_weights: bool = False  # fp32 copies of the (16-bit) LoRA weights in the optimizer
    compiled: bool = False  # decoder layers run through torch.compile
    kernels: str = "torch"  # "liger": fused RMSNorm / rotary / SwiGLU
    not_taken: dict = field(default_factory=dict)  # lever -> why it is not used here, in words
    fallbacks: dict = field(default_factory=dict)  # lever -> the error that made the first-step guard turn it off

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, TORCH_DTYPES[self.weight_dtype])

    @property
    def autocast_dtype(self):
        import torch

        return getattr(torch, TORCH_DTYPES[self.compute])

    @property
    def loss_scaling(self) -> bool:
        return self.compute == "fp16"


def probe() -> Hardware:
    """The hardware this process sees (bf16 counted only where it is native, not emulated)."""
    # variable batch shapes fragment CUDA's caching allocator; growable segments avoid cudaMalloc churn
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        memory = round(props.total_memory / 1e9, 1)
        leased = os.environ.get("BARBAROSSA_GPU_BUDGET_GB")  # a local task shares its GPU: its lease is its budget
        return Hardware(
            "cuda",
            props.name,
            min(memory, float(leased)) if leased else memory,
            torch.cuda.is_bf16_supported(including_emulation=False),
        )
    cpu = torch.cpu
    native = any(getattr(cpu, p, lambda: False)() for p in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return Hardware("cpu", "cpu", round(memory, 1), native)


def choose_precision(hardware: Hardware, requested: str, fp16_safe: bool = True) -> str:
    if requested != "auto":
        return requested
    if hardware.bf16_native:
        return "bf16"
    if hardware.device == "cuda" and fp16_safe:
        return "fp16"
    return "fp32"


def decide(
    hardware: Hardware, cfg: Train, base: dict, memory_need=None, verified: frozenset[str] | None = None
) -> Runtime:
    """The runtime for one work item.

    `memory_need(weight_dtype, quantization, checkpointing) -> GB` is the plan's
    estimate for this item (see `plan.item_memory`); without it (a CPU, or no
    estimate) "auto" settings resolve to no quantisation and no checkpointing.
    `verified`: the levers proven on this GPU (`levers.CHECKED` names); by default
    what the kept gpu-check reports say for the hardware's class of GPU.
    """
    from barbarossa.models.families import get_family

    family = get_family(base["family"])
    compute = choose_precision(hardware, cfg.precision, family.fp16_safe)
    quant, checkpointing = cfg.quantization, cfg.gradient_checkpointing
    if quant != "none" and family.task != "causal":
        if quant == "nf4":
            raise ValueError(f"{base['name']}: 4-bit training is supported for causal families only, not {family.name}")
        quant = "none"
    budget = hardware.memory_gb * HEADROOM
    why = ""
    if hardware.device == "cuda" and memory_need is not None and "auto" in (quant, checkpointing):
        quant, checkpointing, why = _fit(memory_need, compute, quant, checkpointing, budget)
    quant = "none" if quant == "auto" else quant
    checkpointing = False if checkpointing == "auto" else checkpointing
    not_taken: dict[str, str] = {}
    if hardware.device == "cuda" and verified is None:
        verified = levers.verified(hardware.name)
    proven = _Proven(hardware, verified or frozenset())
    adapter = _adapter_dtype(cfg.adapter_dtype, compute, quant, not_taken, proven)
    return Runtime(
        device=hardware.device,
        weight_dtype=compute,
        compute=compute,
        quantization=quant,
        gradient_checkpointing=bool(checkpointing),
        attention=_attention(cfg.attention, hardware, family, cfg.packing, not_taken, proven),
        hardware=f"{hardware.name} ({hardware.memory_gb:g} GB)",
        why=why,
        adapter_dtype=adapter,
        master_weights=adapter != "fp32",
        compiled=_compile(cfg.compile, hardware, family, quant, not_taken, proven),
        kernels=_kernels(cfg.kernels, hardware, family, not_taken, proven),
        not_taken=not_taken,
    )


def installed(module: str) -> bool:
    """Whether an optional package (flash_attn, liger_kernel) can be imported here, without importing it."""
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class _Proven:
    """What "auto" may take on this hardware: on CUDA only the levers a kept gpu-check report verified."""

    hardware: Hardware
    verified: frozenset[str]

    def blocks(self, lever: str, not_taken: dict, key: str | None = None) -> bool:
        """True (and the reason recorded under `key`) where `lever` is unproven on this GPU."""
        if self.hardware.device != "cuda" or lever in self.verified:
            return False
        not_taken[key or lever] = levers.not_verified(self.hardware.name, lever)
        return True


def _adapter_dtype(requested: str, compute: str, quant: str, not_taken: dict, proven: _Proven) -> str:
    """bf16 LoRA weights with fp32 masters where the compute is bf16; fp32 adapters otherwise."""
    reasons = [
        (compute == "fp32", "fp32 compute has no 16-bit weights to match"),
        (compute == "fp16", "fp16 compute keeps fp32 adapters (loss scaling unscales fp32 gradients)"),
        (quant == "nf4", "QLoRA keeps fp32 adapters (k-bit preparation runs the residual stream in fp32)"),
    ]
    reason = next((why for missing, why in reasons if missing), "")
    if requested == "bf16" and reason:
        raise ValueError(f'adapter_dtype = "bf16" cannot run here: {reason}')
    if requested == "fp32" or compute == "fp32":
        return "fp32"
    if reason:
        not_taken["adapter_dtype"] = reason
        return "fp32"
    if requested == "auto" and proven.blocks("adapter_dtype", not_taken):
        return "fp32"
    return compute


def _attention(requested: str, hardware: Hardware, family, packing: bool, not_taken: dict, proven: _Proven) -> str:
    """The attention kernel: a variable-length one for packed rows on CUDA (where verified), SDPA otherwise."""
    if requested != "auto":
        return requested
    packs = family.packs and packing
    if not packs or not family.varlen_attention:
        return "sdpa"
    if hardware.device != "cuda":
        not_taken["attention"] = (
            "flex_attention / flash_attention_2 need CUDA (FlexAttention has no backward on a "
            "CPU): SDPA with a dense block mask per packed row"
        )
        return "sdpa"
    usable = [
        kernel
        for kernel in ("flash_attention_2", "flex_attention")
        if kernel in family.varlen_attention and (kernel != "flash_attention_2" or installed("flash_attn"))
    ]
    if not usable:
        not_taken["attention"] = "flash_attention_2: flash-attn is not installed"
        return "sdpa"
    chosen = next((kernel for kernel in usable if kernel in proven.verified), None)
    if chosen is None:
        proven.blocks(" / ".join(usable), not_taken, "attention")
        return "sdpa"
    return chosen


def _compile(requested, hardware: Hardware, family, quant: str, not_taken: dict, proven: _Proven) -> bool:
    """Regional torch.compile on CUDA where verified; off on a CPU (a short CPU run spends more compiling than it
    saves)."""
    if requested != "auto":
        return bool(requested)
    if hardware.device != "cuda":
        not_taken["compile"] = (
            "off on a CPU: compiling costs more than a short CPU run saves (compile = true forces it)"
        )
        return False
    if family.remote_code:
        not_taken["compile"] = f"{family.name} runs the hub's own code: not compiled"
        return False
    if quant == "nf4":
        not_taken["compile"] = "bitsandbytes 4-bit layers break the compiled graph: QLoRA runs eager"
        return False
    return not proven.blocks("compile", not_taken)


def _kernels(requested: str, hardware: Hardware, family, not_taken: dict, proven: _Proven) -> str:
    """Liger's fused kernels where the family has them, on CUDA, with liger-kernel installed, where verified."""
    if requested == "torch":
        return "torch"
    reasons = [
        (not family.liger, f"Liger has no kernels for {family.name}"),
        (hardware.device != "cuda", "Liger's kernels are Triton: CUDA only"),
        (not installed("liger_kernel"), "liger-kernel is not installed"),
    ]
    reason = next((why for missing, why in reasons if missing), "")
    if reason and requested == "liger":
        raise ValueError(f'kernels = "liger" cannot run here: {reason}')
    if reason:
        not_taken["kernels"] = reason
        return "torch"
    if requested == "auto" and proven.blocks("kernels", not_taken):
        return "torch"
    return "liger"


def taken_levers(decision: Runtime) -> list[str]:
    """The speed levers a decision takes, in the order the first-step guard turns untraced ones off."""
    taken = {
        "compile": decision.compiled,
        "kernels": decision.kernels != "torch",
        "attention": decision.attention in ("flex_attention", "flash_attention_2"),
        "adapter_dtype": decision.master_weights,
    }
    return [lever for lever in levers.LEVERS if taken[lever]]


def without(decision: Runtime, lever: str, why: str) -> Runtime:
    """The decision with one speed lever off, and why in `fallbacks` (the first-step guard's fallback)."""
    off = {
        "compile": {"compiled": False},
        "kernels": {"kernels": "torch"},
        "attention": {"attention": "sdpa"},
        "adapter_dtype": {"adapter_dtype": "fp32", "master_weights": False},
    }[lever]
    return replace(decision, **off, fallbacks={**decision.fallbacks, lever: why})


def _fit(need, dtype: str, quant, checkpointing, budget: float) -> tuple[str, bool, str]:
    """The cheapest (quantisation, checkpointing) that fits `budget` GB; the largest-memory choice first.

    Order of preference: 16-bit without checkpointing (fastest), 16-bit with
    checkpointing (~1.33× compute), 4-bit (changes the model being tuned:
    last resort). A setting the profile fixed is not changed.
    """
    quants = [quant] if quant != "auto" else ["none", "nf4"]
    checks = [checkpointing] if checkpointing != "auto" else [False, True]
    tried = []
    for q in quants:
        for c in checks:
            gb = need(dtype, q, c)
            tried.append(
                f"{'QLoRA nf4' if q == 'nf4' else dtype + ' LoRA'}{' + checkpointing' if c else ''} {gb:.1f} GB"
            )
            if gb <= budget:
                return (
                    q,
                    c,
                    f"{tried[-1]} fits {budget:.0f} GB" + (f" (not: {'; '.join(tried[:-1])})" if tried[:-1] else ""),
                )
    return quants[-1], checks[-1], f"nothing fits {budget:.0f} GB: {'; '.join(tried)}"


def autocast(decision: Runtime):
    """The forward pass's autocast context: the decision's compute dtype (a no-op in fp32)."""
    import torch

    return torch.autocast(decision.device, dtype=decision.autocast_dtype, enabled=decision.compute != "fp32")
