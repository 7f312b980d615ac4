"""When a fine-tune stops before max_steps: early stopping and fail-fast on a dev split (pure rules).

The original Barbarossa paid for 5000 steps of every candidate, also of those whose held-out loss
had stopped improving long before and of those that never beat their base. Here the trainer scores
a small dev split — carved from the training data, never from the held-out eval split — in bits
per byte every `eval_every` steps, with the evaluation's own scorer:

- **early stopping**: stop when dev bits per byte has not improved by `min_delta` for `patience`
  evaluations in a row; the adapter kept is the best evaluation's, not the last step's;
- **fail-fast**: at the first evaluation at or after `fail_fast_steps`, a candidate whose dev bits
  per byte is not below its untuned base's stops, and its row is held with the reason in words.

The state is a plain dict kept in every checkpoint, so a resumed task goes on where it stopped.
"""

from __future__ import annotations

from barbarossa.config import EarlyStopping


def new_state(base_bits: float | None) -> dict:
    return {"base": base_bits, "curve": [], "best": None, "best_step": 0, "bad": 0, "stopped": None, "reason": ""}


def due(cfg: EarlyStopping, step: int, last: int) -> bool:
    """Whether the dev split is scored after `step` (every eval_every steps, and after the last)."""
    return step % cfg.eval_every == 0 or step == last


def update(state: dict, step: int, bits: float, cfg: EarlyStopping) -> bool:
    """Record one dev evaluation; True when it is the new best (its adapter is the one to keep).

    Sets state["stopped"] ("patience" or "fail_fast") and state["reason"] when training should stop.
    """
    state["curve"].append({"step": step, "bits_per_byte": round(bits, 5)})
    improved = state["best"] is None or bits < state["best"] - cfg.min_delta
    if improved:
        state["best"], state["best_step"], state["bad"] = bits, step, 0
    else:
        state["bad"] += 1
    fail_fast = cfg.fail_fast_steps
    if fail_fast and step >= fail_fast and state["base"] is not None and not state.get("checked_base"):
        state["checked_base"] = True
        if state["best"] >= state["base"]:
            state["stopped"] = "fail_fast"
            state["reason"] = (
                f"no gain on dev after {step} steps: {state['best']:.2f} vs base {state['base']:.2f} bits per byte"
            )
            return improved
    patience = cfg.patience
    if patience and state["bad"] >= patience:
        state["stopped"] = "patience"
        state["reason"] = (
            f"dev bits per byte did not improve by {cfg.min_delta} for {patience} evaluations; "
            f"best {state['best']:.3f} at step {state['best_step']}"
        )
    return improved
