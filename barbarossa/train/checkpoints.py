"""Resumable training checkpoints in the run's own storage (a local folder or an S3 prefix).

A checkpoint is one file, `checkpoints/step-NNNNNN.pt`: the trainable (LoRA)
weights, the optimizer state, the RNG states and the trainer's progress (step,
loss curve, token counts, micro-batch; the data position follows from the
step). It is written whole, then `checkpoints/latest.json` is pointed at it,
then files older than the previous checkpoint are removed — a kill at any
moment leaves a complete checkpoint behind.

The marker lists the latest two checkpoints with their size and sha256: a
file that a failing disk, a bad copy or an interrupted upload left truncated
or altered is caught before its weights are trusted (torch.load alone reads
silently flipped tensor bytes), and `restore` falls back to the previous
checkpoint, then to a clean start, warning which file was bad and why.

Why not metaflow-checkpoint's `@checkpoint`: it is marked experimental, was
not tried on S3, and ties resuming to Metaflow; this trainer is a plain loop
whose whole state is a few small tensors, and a `@retry` of the same task
writes to the same output prefix, so finding the last checkpoint is one read.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import warnings

from barbarossa import storage
from barbarossa.console import log

KEEP = 2  # the latest and the one before it: a bad latest file still leaves a checkpoint to resume from


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used; training resumes from an older one or starts over."""


def _marker(out_uri: str) -> str:
    return storage.join(out_uri, "checkpoints", "latest.json")


def save(out_uri: str, model, optimizer, progress: dict) -> str:
    """Write a checkpoint for `progress['step']` and make it the latest; returns its URI."""
    import torch

    state = {
        "weights": {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "progress": progress,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    uri = storage.join(out_uri, "checkpoints", f"step-{progress['step']:06d}.pt")
    storage.write_bytes(uri, payload)
    entry = {"step": progress["step"], "uri": uri, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    before = _entries(_latest(out_uri))
    kept = [entry] + [e for e in before if e["uri"] != uri][: KEEP - 1]
    _write_marker(out_uri, kept)
    for old in before:
        if old["uri"] not in {e["uri"] for e in kept}:
            storage.delete(old["uri"])
    return uri


def _write_marker(out_uri: str, entries: list[dict]) -> None:
    """The marker: `step` and `uri` of the latest (what older readers look at) and every kept entry, newest first."""
    storage.write_text(
        _marker(out_uri), json.dumps({"step": entries[0]["step"], "uri": entries[0]["uri"], "checkpoints": entries})
    )


def _entries(marker: dict | None) -> list[dict]:
    """Kept checkpoints, newest first; an old-format marker (one file, no hash) is a list of one."""
    if not marker:
        return []
    return marker.get("checkpoints") or [{"step": marker["step"], "uri": marker["uri"]}]


def _latest(out_uri: str) -> dict | None:
    marker = _marker(out_uri)
    return json.loads(storage.read_bytes(marker)) if storage.exists(marker) else None


def _load_verified(entry: dict):
    """(state, None) for a checkpoint that is whole and loads, else (None, why not)."""
    import torch

    uri = entry["uri"]
    if not storage.exists(uri):
        return None, "missing"
    payload = storage.read_bytes(uri)  # a read error other than absence propagates: the task's @retry reads again
    if "size" in entry and len(payload) != entry["size"]:
        return None, f"truncated ({len(payload)} of {entry['size']} bytes)"
    if "sha256" in entry and hashlib.sha256(payload).hexdigest() != entry["sha256"]:
        return None, "corrupt (sha256 does not match the one recorded when it was written)"
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        missing = {"weights", "optimizer", "rng", "progress"} - set(state)
    except Exception as error:
        return None, f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    if missing:
        return None, f"incomplete (no {', '.join(sorted(missing))})"
    return state, None


def _warn(message: str) -> None:
    log(f"[yellow]warning[/]: {message}")
    warnings.warn(message, CheckpointWarning, stacklevel=3)


def restore(out_uri: str, model, optimizer) -> dict | None:
    """Load the newest usable checkpoint into `model` and `optimizer`; its progress dict, or None to start clean.

    A bad checkpoint (missing, truncated, corrupt, unreadable) is skipped with a
    warning naming it; the marker is then rewritten without it, so the next
    `save` keeps the good one as its previous instead of the bad one.
    """
    import torch

    entries = _entries(_latest(out_uri))
    if not entries:
        return None
    state = None
    for index, entry in enumerate(entries):
        state, why = _load_verified(entry)
        if state is not None:
            break
        rest = entries[index + 1 :]
        then = f"resuming from step {rest[0]['step']} instead" if rest else "starting from step 0"
        _warn(f"checkpoint {entry['uri']} (step {entry['step']}) is {why}; {then}")
    if state is None:
        storage.delete(_marker(out_uri))
        return None
    if index:
        _write_marker(out_uri, entries[index:])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["weights"].items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate((3, tuple(state["rng"]["python"]), None))
    return state["progress"]
