"""The one place that knows each architecture family's quirks.

Steps and trainers ask a Family what to target with LoRA, how to load the model
and what to do about a missing pad token; nothing else special-cases a model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    task: str  # "causal" or "seq2seq"
    attention_targets: tuple[str, ...]  # the attention projections LoRA adapts by default
    fan_in_fan_out: bool = False  # GPT-2 style Conv1D weights are stored transposed
    remote_code: bool = False
    # Padding-free packing: several examples in one row, attention kept inside each by position ids
    # that restart at 0. Only where the model builds its mask from position ids (tested per family);
    # OPT derives positions from the attention mask and BLOOM/MPT use ALiBi, so they pad instead.
    packs: bool = False
    # Activation memory for LoRA training, bytes per token and layer: (× hidden, × heads × sequence length for
    # eager attention's scores, extra × hidden when every linear layer is adapted). Measured by counting what
    # autograd saves in bf16 (tests/planning/test_plan.py re-measures them); the plan and the runtime decision use them.
    activation: tuple[float, float, float] = (41, 0, 27)
    fp16_safe: bool = True  # T5 overflows in fp16: it runs fp32 where bf16 is not native
    # Attention kernels that keep packed examples apart without a dense mask (flash-attn's variable-length
    # kernel, FlexAttention's document BlockMask), in preference order: what transformers implements per family.
    varlen_attention: tuple[str, ...] = ()
    # The Liger Kernel patch for this architecture (fused RMSNorm, rotary, SwiGLU; `kernels.py`), "" for none.
    liger: str = ""

    @property
    def shares_prefix(self) -> bool:
        """Shared-prefix batches (`shared_prefix.py`) need the library's Cache API, which remote code may predate."""
        return self.task == "causal" and not self.remote_code

    def lora_targets(self, targets: str | list[str]) -> str | list[str]:
        """Resolve a roster recipe's `targets` (a keyword or module names) for this family."""
        if targets == "attention":
            return list(self.attention_targets)
        if targets == "all-linear":
            return "all-linear"
        if isinstance(targets, list) and targets and all(isinstance(t, str) for t in targets):
            return targets
        raise ValueError(f"LoRA targets must be 'attention', 'all-linear' or a list of module names, got {targets!r}")


FLASH, FLASH_AND_FLEX = ("flash_attention_2",), ("flash_attention_2", "flex_attention")
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama",
            "causal",
            ("q_proj", "k_proj", "v_proj", "o_proj"),
            packs=True,
            activation=(41, 0, 27),
            varlen_attention=FLASH_AND_FLEX,
            liger="llama",
        ),
        Family(
            "mistral",
            "causal",
            ("q_proj", "k_proj", "v_proj", "o_proj"),
            packs=True,
            activation=(43, 0, 31),
            varlen_attention=FLASH_AND_FLEX,
            liger="mistral",
        ),
        Family(
            "gpt2",
            "causal",
            ("c_attn",),
            fan_in_fan_out=True,
            packs=True,
            activation=(56, 12, 24),
            varlen_attention=FLASH,
        ),
        Family(
            "gpt_neo",
            "causal",
            ("q_proj", "k_proj", "v_proj", "out_proj"),
            packs=True,
            activation=(52, 6, 31),
            varlen_attention=FLASH,
        ),
        Family(
            "gpt_neox",
            "causal",
            ("query_key_value", "dense"),
            packs=True,
            activation=(18, 0, 28),
            varlen_attention=FLASH_AND_FLEX,
        ),
        Family("opt", "causal", ("q_proj", "k_proj", "v_proj", "out_proj"), activation=(32, 0, 29)),
        Family("bloom", "causal", ("query_key_value", "dense"), activation=(22, 6, 24)),
        Family("mpt", "causal", ("Wqkv", "out_proj"), activation=(22, 6, 24)),
        Family(
            "stablelm",
            "causal",
            ("q_proj", "k_proj", "v_proj", "o_proj"),
            packs=True,
            activation=(37, 0, 27),
            varlen_attention=FLASH,
        ),
        Family("t5", "seq2seq", ("q", "k", "v", "o"), activation=(41, 0, 27), fp16_safe=False),
        Family("deci", "causal", ("q_proj", "k_proj", "v_proj", "o_proj"), remote_code=True, packs=True),
    )
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown architecture family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
