"""The step's speed levers, applied to a loaded model as the runtime decision says (`runtime.py` decides).

- Liger's fused kernels (RMSNorm, rotary, SwiGLU; a fused linear cross-entropy
  for the response-only loss) patched into the loaded model before LoRA wraps it:
  fewer, larger kernels per layer, no vocabulary-sized logits in memory.
- Regional compilation: every decoder layer through `torch.compile`. The layers
  share one code object, so one layer is compiled and the others reuse it —
  seconds, not minutes — and the embedding, mask building and loss stay eager.
- Evaluation (held-out scoring, generation, dev checks) runs eager with SDPA:
  padded batches and KV-cache decoding would recompile for every new length, and
  the packed-row attention kernels pay only for packed training rows.
"""

from __future__ import annotations

import contextlib

from barbarossa.models.families import get_family

EVALUATION_ATTENTION = "sdpa"  # padded batches and generation: no packed rows to keep apart
BUCKET = 128  # packed rows of a compiled or FlexAttention model are padded to a multiple of this (its block size)


def base_of(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def apply_fused_kernels(model, family: str, decision) -> None:
    """Liger's kernels for this family, in place, when the decision took them (a no-op otherwise)."""
    if decision is None or decision.kernels != "liger":
        return
    import liger_kernel.transformers as liger

    patch = getattr(liger, f"apply_liger_kernel_to_{get_family(family).liger}")
    patch(model=model, rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False)
    # the trainer's loss projects only response positions itself (`losses.py`): it takes Liger's fused
    # projection + cross-entropy through this attribute instead of the model's forward
    model.fused_linear_cross_entropy = liger.LigerFusedLinearCrossEntropyLoss(reduction="none")


def fused_linear_cross_entropy(model):
    """The fused projection + cross-entropy a model was given by `apply_fused_kernels`, or None."""
    return getattr(base_of(model), "fused_linear_cross_entropy", None)


def decoder_layers(model) -> list:
    """The repeated blocks of a model: the modules transformers keeps whole when it splits a model over devices."""
    base = base_of(model)
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in base.modules() if type(m).__name__ in names]


def compile_layers(model) -> int:
    """Every decoder layer compiled in place (`nn.Module.compile`); the number compiled.

    Shapes: `dynamic=None` lets dynamo compile the first shape statically and
    a second one with a symbolic length, after which new lengths reuse it; the
    trainer buckets packed rows to multiples of `BUCKET` so few shapes exist.
    """
    import torch

    _site_typing_extensions()
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"{type(base_of(model)).__name__}: no decoder layers found to compile (_no_split_modules)")
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for layer in layers:
        layer.compile()
    return len(layers)


def _site_typing_extensions() -> None:
    """Put back the site typing_extensions' hook into `typing`, which Metaflow's vendored copy replaces.

    Both copies patch `typing._collect_parameters`, each with its own "no default" sentinel. Once
    Metaflow's vendored copy is imported after torch, the type parameters torch built from the site copy
    look as if they had defaults, and inductor's modules fail at import ("Type parameter ~_T without a
    default follows type parameter with a default"). A task that compiles restores the site copy's hook.
    """
    import typing

    import typing_extensions

    site = getattr(typing_extensions, "_collect_parameters", None)
    if site is not None and hasattr(typing, "_collect_parameters"):
        typing._collect_parameters = site


def _evaluation_mode(model):
    """Switch the model to eager layers and SDPA attention; a function that puts training's back."""
    layers, base = decoder_layers(model), base_of(model)
    compiled = [getattr(layer, "_compiled_call_impl", None) for layer in layers]
    attention = getattr(base.config, "_attn_implementation", None)
    switch = attention not in (None, EVALUATION_ATTENTION, "eager")
    for layer in layers:
        layer._compiled_call_impl = None
    if switch:
        base.set_attn_implementation(EVALUATION_ATTENTION)

    def restore() -> None:
        for layer, impl in zip(layers, compiled):
            layer._compiled_call_impl = impl
        if switch:
            base.set_attn_implementation(attention)

    return restore


@contextlib.contextmanager
def evaluating(model):
    """Eager layers and SDPA attention inside the block (dev checks during training); training's afterwards."""
    restore = _evaluation_mode(model)
    try:
        yield model
    finally:
        restore()


def for_evaluation(model):
    """The model as evaluation runs it from here on: eager layers, SDPA where training took a packed-row kernel."""
    _evaluation_mode(model)
    return model
