"""Resumable training checkpoints in the run's own storage (a local folder or an S3 prefix).

A checkpoint is one file, `checkpoints/step-NNNNNN.pt`: the trainable (LoRA)
weights, the optimizer state, the RNG states and the trainer's progress (step,
loss curve, token counts; the data position follows from the step). It is
written whole, then `checkpoints/latest.json` is pointed at it, then the older
file is removed — a kill at any moment leaves a complete checkpoint behind.

Why not metaflow-checkpoint's `@checkpoint`: it is marked experimental, was
not tried on S3, and ties resuming to Metaflow; this trainer is a plain loop
whose whole state is a few small tensors, and a `@retry` of the same task
writes to the same output prefix, so finding the last checkpoint is one read.
"""

from __future__ import annotations

import io
import json
import random

from barbarossa import storage


def _marker(out_uri: str) -> str:
    return storage.join(out_uri, "checkpoints", "latest.json")


def save(out_uri: str, model, optimizer, progress: dict) -> str:
    """Write a checkpoint for `progress['step']` and make it the latest; returns its URI."""
    import torch

    state = {
        "weights": {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "progress": progress,
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    uri = storage.join(out_uri, "checkpoints", f"step-{progress['step']:06d}.pt")
    storage.write_bytes(uri, buffer.getvalue())
    previous = latest_uri(out_uri)
    storage.write_text(_marker(out_uri), json.dumps({"step": progress["step"], "uri": uri}))
    if previous and previous != uri:
        storage.delete(previous)
    return uri


def _latest(out_uri: str) -> dict | None:
    marker = _marker(out_uri)
    return json.loads(storage.read_bytes(marker)) if storage.exists(marker) else None


def latest_uri(out_uri: str) -> str | None:
    return (_latest(out_uri) or {}).get("uri")


def latest_step(out_uri: str) -> int:
    """The step of the latest complete checkpoint (0 when there is none)."""
    return (_latest(out_uri) or {}).get("step", 0)


def restore(out_uri: str, model, optimizer) -> dict | None:
    """Load the latest checkpoint into `model` and `optimizer`; its progress dict, or None if there is none."""
    import torch

    uri = latest_uri(out_uri)
    if uri is None:
        return None
    state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
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
