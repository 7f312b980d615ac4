"""Per-token losses of response tokens: the LM head applied only where a response token follows.

Training (every causal batch layout) and evaluation (held-out NLL, bits per
byte) score with these same functions, so a model is measured the way it is
trained. The model runs without its head (`logits_to_keep` empty): prompt
tokens cost no vocabulary-sized matmul or softmax — never B×L×V logits. Where
Liger's kernels were taken (CUDA), training fuses that projection with the
cross-entropy in chunks, so not even the response positions' logits are held.
"""

from __future__ import annotations

from barbarossa.data.prompts import IGNORE_INDEX
from barbarossa.engine import kernels


def target_positions(labels):
    """Flat indices into labels[:, 1:] of the positions that predict a response token (computed on the host)."""
    return (labels[:, 1:].reshape(-1) != IGNORE_INDEX).nonzero().squeeze(1)


def response_token_losses(model, hidden, labels, targets=None):
    """Cross-entropy where a response token follows, the LM head applied to those final hidden states only.

    `targets` (from `target_positions`, found before the batch went to the
    device) saves the device sync that finding them there would cost.
    """
    import torch
    import torch.nn.functional as F

    if targets is None:
        targets = target_positions(labels)
    at = targets + targets // (labels.shape[1] - 1)  # (row, col) of labels[:, 1:] → flat index of hidden / labels
    head, kept, wanted = (
        model.get_output_embeddings(),
        hidden.reshape(-1, hidden.shape[-1])[at],
        labels.reshape(-1)[at + 1],
    )
    fused = kernels.fused_linear_cross_entropy(model)
    if fused is not None and torch.is_grad_enabled() and head.bias is None:  # training: no logits in memory
        return fused(head.weight, kept, wanted)
    return F.cross_entropy(head(kept).float(), wanted, reduction="none")


def padded_token_losses(model, batch: dict):
    """Per-token cross-entropy of a right-padded causal batch, the LM head applied only where a response token
    follows."""
    import torch

    labels = batch["labels"]
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=torch.empty(0, dtype=torch.long, device=labels.device),
    )
    return response_token_losses(model, out.hidden_states[-1], labels, batch.get("targets"))


def packed_token_losses(model, batch: dict):
    """Per-token cross-entropy of packed rows, projecting to the vocabulary only where a supervised token follows."""
    import torch

    labels = batch["labels"]
    out = model(
        input_ids=batch["input_ids"],
        position_ids=batch["position_ids"],
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=torch.empty(0, dtype=torch.long, device=labels.device),
    )
    return response_token_losses(model, out.hidden_states[-1], labels, batch.get("targets"))
