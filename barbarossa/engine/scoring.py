"""Response NLL of records under a model: the one scorer of held-out rows (evaluate/) and dev rows (train/).

It sits below both stages so that training's early stopping scores its dev split exactly as the
evaluation scores the held-out split (see evaluate/protocol.py for why bits per byte counts only
responses scored whole, EOS included).
"""

from __future__ import annotations

import contextlib
import math

from barbarossa.data import prompts
from barbarossa.engine import losses, runtime, shared_prefix


def is_seq2seq(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def device_of(model):
    return next(model.parameters()).device


def _scored_tokens(example: dict, task: str) -> int:
    """Response tokens the loss scores in an example: unmasked labels (a causal LM predicts labels[1:])."""
    labels = example["labels"][1:] if task == "causal" else example["labels"]
    return sum(label != prompts.IGNORE_INDEX for label in labels)


def row_sums(losses, counts: list[int]) -> list[float]:
    """Per-token losses of a batch (row after row, as the loss functions return them) summed per row, in float64."""
    import torch

    flat = losses.detach().cpu().double()
    rows = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))
    return torch.zeros(len(counts), dtype=torch.float64).index_add_(0, rows, flat).tolist()


def _batch_token_losses(model, batch: dict, task: str):
    """Per-token response losses of one right-padded batch, row after row."""
    import torch

    if task == "causal":
        return losses.padded_token_losses(model, batch)
    logits = model(**batch).logits.float()  # seq2seq: every decoder position is a response token
    token_losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        batch["labels"].reshape(-1),
        ignore_index=prompts.IGNORE_INDEX,
        reduction="none",
    )
    return token_losses[batch["labels"].reshape(-1) != prompts.IGNORE_INDEX]


def response_nll(
    model,
    tokenizer,
    records: list[dict],
    max_length: int,
    batch_size: int,
    decision: runtime.Runtime | None = None,
    template=None,
    share_prompts: bool = False,
) -> dict[str, list]:
    """Per record, in record order: response NLL in nats (EOS included), tokens scored, and the
    reference's UTF-8 bytes when its whole response (and EOS) was scored, else 0 (see module docstring).
    Prompts are rendered in `template` (a prompts.Template or a language pack; None: the default pack's).

    Causal models run without their LM head and project only the positions
    that predict a response token (never B×L×V logits: 8 GB at batch 16 for
    BLOOM's 250K vocabulary); examples are batched in length order. A record
    too long to score at all gets zeros everywhere.

    `share_prompts` (causal families whose cache the shared_prefix module can use): records
    are batched in their own order and a prompt common to several of them — the
    choices of one multiple-choice item — runs once (engine/shared_prefix.py); the
    numbers equal the unshared ones (a test checks each causal family).
    """
    import torch

    task = "seq2seq" if is_seq2seq(model) else "causal"
    examples = prompts.build_examples(tokenizer, records, max_length, task=task, template=template)
    nll, tokens, sizes = [0.0] * len(records), [0] * len(records), [0] * len(records)
    shared = share_prompts and task == "causal"
    kept = [i for i, e in enumerate(examples) if e]
    order = kept if shared else sorted(kept, key=lambda i: len(examples[i]["input_ids"]))
    device = device_of(model)
    with torch.no_grad(), runtime.autocast(decision) if decision else contextlib.nullcontext():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if shared:
                batch = shared_prefix.shared_prefix_batch([examples[i] for i in chunk], tokenizer.pad_token_id)
                chunk = [chunk[row] for part in batch["chunks"] for row in part["rows"]]  # the order losses come in
                token_losses = shared_prefix.shared_prefix_losses(model, batch)
            else:
                batch = {
                    k: v.to(device)
                    for k, v in prompts.pad_batch([examples[i] for i in chunk], tokenizer.pad_token_id).items()
                }
                token_losses = _batch_token_losses(model, batch, task)
            counts = [_scored_tokens(examples[i], task) for i in chunk]
            for i, total, count in zip(chunk, row_sums(token_losses, counts), counts):
                nll[i], tokens[i] = total, count
    for i in order:
        whole = tokens[i] == len(prompts.encode_response(tokenizer, records[i]["output"]))
        sizes[i] = len(records[i]["output"].encode("utf-8")) if whole else 0
    return {"nll": nll, "tokens": tokens, "bytes": sizes}


def bits_per_byte(rows: dict) -> float | None:
    """Bits per UTF-8 byte over the responses scored whole (None when none was)."""
    total = sum(b for b in rows["bytes"])
    if not total:
        return None
    return sum(n for n, b in zip(rows["nll"], rows["bytes"]) if b) / (math.log(2) * total)
