"""What `start` checks before any compute: a model that cannot run becomes a failed row, not a failed run.

Three reasons to refuse a work item, each with one line that says what to do:
- remote code without a pinned commit (`roster.refusal`, set when items are built);
- the cost plan says the trainer cannot fit the candidate on its box, neither
  16-bit LoRA nor QLoRA, with or without checkpointing (`plan.refusals`);
- the base's files cannot be had (offline, gated, unknown revision): its
  tokenizer is fetched here — a few small files — so a missing base costs
  seconds in `start`, not a fan-out of GPU tasks. Every item of that base
  (its baseline and its candidates) is refused. The tokenizers loaded here
  are the ones the rest of `start` uses (token cache, masking preview).
"""

from __future__ import annotations

from barbarossa.engine import loading
from barbarossa.models import roster, weights
from barbarossa.planning import plan


def refuse(items: list[dict], reasons: dict[str, str], key) -> None:
    """Mark items refused (in place) whose `key(item)` has a reason; an earlier refusal stands."""
    for item in items:
        reason = reasons.get(key(item))
        if reason and not item["refusal"]:
            item["refusal"] = reason


def load_tokenizers(items: list[dict]) -> tuple[dict[str, object], dict[str, str]]:
    """({base name: tokenizer}, {base name: one-line reason it cannot be loaded}) for the bases of items not
    refused yet, each loaded once (mirror or hub): `start` goes on with these, never loading one again."""
    tokenizers, reasons = {}, {}
    for item in items:
        base = item["base"]
        if base["name"] in tokenizers or base["name"] in reasons or item["refusal"]:
            continue
        try:
            tokenizers[base["name"]] = loading.load_base_tokenizer(base)
        except (weights.WeightsUnavailable, OSError) as err:
            reasons[base["name"]] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return tokenizers, reasons


def check(items: list[dict], plan_result: dict) -> tuple[list[dict], list[dict], dict[str, object]]:
    """(items that may run, refused results, {base name: tokenizer} of the bases that may run)."""
    refuse(items, plan.refusals(plan_result), key=lambda item: item["name"] if item["kind"] == "candidate" else None)
    tokenizers, reasons = load_tokenizers(items)
    refuse(items, reasons, key=lambda item: item["base"]["name"])
    allowed, refused = roster.runnable(items)
    return allowed, refused, tokenizers
