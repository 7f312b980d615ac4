"""Shared-prefix batches: a prompt prefix common to several examples is computed once per batch.

Training (train/loop.py) shares the preamble of a batch's prompts; the benchmarks' multiple-choice
scoring (engine/scoring.py) shares an item's whole prompt among its choices.

Every Alpaca prompt opens with one of two fixed preambles (68 or 84 SmolLM2
tokens of a ~193-token example), so a batch recomputes the same prefix for
each of its examples. Here the examples of a batch are grouped by their
longest common token prefix; each group's prefix runs once (one row per group)
through the model's own KV-cache path — the one generation uses, which every
causal family implements — and the examples' remaining tokens run after it,
attending to that cache. Gradients flow into the prefix from every example of
its group, so loss and gradients equal the unshared batch (a test checks each
causal family to 1e-5). Not for remote-code models: their hub code may
predate the library's Cache API.

The remaining tokens are cut into a few chunks of similar length (a small
dynamic programme) so that padding stays low without many tiny matmuls.

Not with gradient checkpointing: transformers drops the cache inside
checkpointed layers, so the trainer packs instead there. A dropout mask drawn
in a shared prefix is shared by its group (still dropout, correlated).
"""

from __future__ import annotations

import copy
import math

from barbarossa.data.prompts import IGNORE_INDEX, pad_rows
from barbarossa.engine.losses import response_token_losses

MIN_SHARED = 8  # a prefix shorter than this is not worth a separate forward pass
CALL_COST = 128  # one more forward call, in padded-token equivalents (small matmuls run slower per token)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(seqs: list[list[int]], caps: list[int], min_shared: int = MIN_SHARED) -> list[tuple[list[int], int]]:
    """(members, shared length) groups that maximise the tokens not recomputed, sum of (size - 1) × shared.

    Sequences sorted by content put common prefixes next to each other; the
    best split of that order into runs is a small dynamic programme. A
    member's prefix never exceeds its cap (the prompt must end after it).
    Sequences that share nothing worth sharing come back alone with 0.
    """
    order = sorted(range(len(seqs)), key=lambda i: seqs[i])
    adjacent = [common_prefix(seqs[a], seqs[b]) for a, b in zip(order, order[1:])]
    n = len(order)
    best, start, length = [0] + [-1] * n, [0] * (n + 1), [0] * (n + 1)
    for end in range(1, n + 1):
        shared = caps[order[end - 1]]
        for first in range(end - 1, -1, -1):
            if first < end - 1:
                shared = min(shared, caps[order[first]], adjacent[first])
            usable = shared if end - first > 1 and shared >= min_shared else 0
            if best[first] + (end - first - 1) * usable > best[end]:
                best[end], start[end], length[end] = best[first] + (end - first - 1) * usable, first, usable
    groups, end = [], n
    while end:
        groups.append(([order[k] for k in range(start[end], end)], length[end]))
        end = start[end]
    return groups[::-1]


def length_chunks(lengths: list[int], call_cost: int = CALL_COST) -> list[list[int]]:
    """Indices cut into chunks of similar length, minimising padded tokens + call_cost per chunk."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best, start = [0] + [math.inf] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for first in range(end):
            cost = best[first] + (end - first) * lengths[order[first]] + call_cost
            if cost < best[end]:
                best[end], start[end] = cost, first
    chunks, end = [], n
    while end:
        chunks.append(order[start[end] : end])
        end = start[end]
    return chunks[::-1]


def shared_prefix_batch(examples: list[dict], pad_id: int, call_cost: int = CALL_COST) -> dict:
    """The batch as one prefix call (a row per group) and a few chunk calls of the examples' remaining tokens.

    Plain lists, no tensors: `shared_prefix_losses` makes them on the model's
    device. `computed` counts the positions the model will run, padding included.
    """
    seqs = [e["input_ids"] for e in examples]
    # the position that predicts the first response token must run in the chunk call, where the LM head is applied
    caps = [
        next((i for i, label in enumerate(e["labels"]) if label != IGNORE_INDEX), len(e["labels"])) - 1
        for e in examples
    ]
    groups = [(members, shared) for members, shared in prefix_groups(seqs, caps) if shared]
    group_of = {i: g for g, (members, _) in enumerate(groups) for i in members}
    shared = [groups[group_of[i]][1] if i in group_of else 0 for i in range(len(examples))]
    prefixes = [seqs[members[0]][:length] for members, length in groups]
    tails = [seq[cut:] for seq, cut in zip(seqs, shared)]
    chunks = []
    for chunk in length_chunks([len(t) for t in tails], call_cost):
        chunks.append(
            {
                "input_ids": pad_rows([tails[i] for i in chunk], pad_id),
                "labels": pad_rows([examples[i]["labels"][shared[i] :] for i in chunk], IGNORE_INDEX),
                "mask": pad_rows([[1] * len(tails[i]) for i in chunk], 0),
                "start": [shared[i] for i in chunk],  # position of the first remaining token
                "group": [group_of.get(i, len(groups)) for i in chunk],  # len(groups): no prefix
                "rows": list(chunk),  # which examples, in the order their losses come back
            }
        )
    computed = sum(len(c["input_ids"]) * len(c["input_ids"][0]) for c in chunks)
    if prefixes:
        computed += len(prefixes) * max(len(p) for p in prefixes)
    return {"prefixes": prefixes, "chunks": chunks, "computed": computed}


def _with_zero_row(tensor):
    import torch

    return torch.cat([tensor, tensor.new_zeros(1, *tensor.shape[1:])])


def _rows_of(cache, padded_layers, rows):
    """A copy of the prefix cache holding the given rows (index len(prefixes): the zero, fully masked prefix)."""
    picked = copy.copy(cache)
    picked.layers = []
    for layer, (keys, values) in zip(cache.layers, padded_layers):
        mine = copy.copy(layer)
        mine.keys, mine.values = keys[rows], values[rows]
        picked.layers.append(mine)
    return picked


def shared_prefix_losses(model, batch: dict):
    """Per-token cross-entropy of a shared-prefix batch; the LM head only where a response token follows."""
    import torch

    device = next(model.parameters()).device
    tensor = lambda rows: torch.tensor(rows, device=device)  # noqa: E731
    no_logits = torch.empty(0, dtype=torch.long, device=device)
    cache = prefix_mask = None
    if batch["prefixes"]:
        # left-padded, so that in every row the real tokens of prefix and remainder sit in adjacent slots
        # (sliding-window and ALiBi masks count slots, not positions)
        prefixes = batch["prefixes"]
        prefix_mask = tensor(pad_rows([[1] * len(p) for p in prefixes], 0, "left"))
        positions = tensor(pad_rows([list(range(len(p))) for p in prefixes], 0, "left"))
        cache = model(
            input_ids=tensor(pad_rows(prefixes, 0, "left")),
            attention_mask=prefix_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=no_logits,
        ).cache
        prefix_mask = _with_zero_row(prefix_mask)
        padded_layers = [(_with_zero_row(layer.keys), _with_zero_row(layer.values)) for layer in cache.layers]
    losses = []
    for chunk in batch["chunks"]:
        ids, labels, mask = tensor(chunk["input_ids"]), tensor(chunk["labels"]), tensor(chunk["mask"])
        positions = tensor(chunk["start"])[:, None] + torch.arange(ids.shape[1], device=device)
        extra = {"use_cache": False}
        if cache is not None:
            rows = tensor(chunk["group"])
            extra = {"use_cache": True, "cache": _rows_of(cache, padded_layers, rows)}
            mask = torch.cat([prefix_mask[rows], mask], dim=1)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=no_logits,
            **extra,
        )
        losses.append(response_token_losses(model, out.hidden_states[-1], labels))
    return torch.cat(losses)
