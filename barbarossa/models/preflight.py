"""What `start` checks before any compute: a model that cannot run becomes a failed row, not a failed run.

Three reasons to refuse a work item, each with one line that says what to do:
- remote code without a pinned commit (`registry.refusal`, set when items are built);
- the cost plan says the trainer cannot fit the candidate on its box, neither
  16-bit LoRA nor QLoRA, with or without checkpointing (`plan.refusals`);
- the base's files cannot be had (offline, gated, unknown revision): its
  tokenizer is fetched here — a few small files — so a missing base costs
  seconds in `start`, not a fan-out of GPU tasks. Every item of that base
  (its baseline and its candidates) is refused.
"""

from __future__ import annotations

from barbarossa import models, plan, registry, weights


def refuse(items: list[dict], reasons: dict[str, str], key) -> None:
    """Mark items refused (in place) whose `key(item)` has a reason; an earlier refusal stands."""
    for item in items:
        reason = reasons.get(key(item))
        if reason and not item["refusal"]:
            item["refusal"] = reason


def unfetchable(items: list[dict]) -> dict[str, str]:
    """{base name: one-line reason} for every base whose tokenizer cannot be loaded (mirror or hub)."""
    reasons, seen = {}, set()
    for item in items:
        base = item["base"]
        if base["name"] in seen or item["refusal"]:
            continue
        seen.add(base["name"])
        try:
            models.load_base_tokenizer(base)
        except (weights.WeightsUnavailable, OSError) as err:
            reasons[base["name"]] = str(err).splitlines()[0] if str(err) else type(err).__name__
    return reasons


def check(items: list[dict], plan_result: dict) -> tuple[list[dict], list[dict]]:
    """(items that may run, refused results) after every check above."""
    refuse(items, plan.refusals(plan_result), key=lambda item: item["name"] if item["kind"] == "candidate" else None)
    refuse(items, unfetchable(items), key=lambda item: item["base"]["name"])
    return registry.runnable(items)
