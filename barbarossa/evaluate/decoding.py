"""Batched decoding and metric modules, shared by the held-out protocol (protocol.py), the benchmarks
(benchmark_scoring.py) and the local teacher (llm/local.py)."""

from __future__ import annotations

import contextlib
import os
from functools import cache
from pathlib import Path

from barbarossa.data import prompts
from barbarossa.engine import runtime
from barbarossa.engine.scoring import device_of, is_seq2seq

METRICS_DIR = Path(__file__).parent / "metrics"


@cache
def load_metric(name: str):
    """A local `evaluate` module: a name from barbarossa/evaluate/metrics/, or a path to a user's module file.

    (Hub metric scripts are unreachable offline, and a path pins exactly what is computed.)
    """
    import evaluate

    return evaluate.load(name if name.endswith(".py") else str(METRICS_DIR / f"{name}.py"))


def generate(
    model,
    tokenizer,
    records: list[dict],
    max_new_tokens: int,
    batch_size: int,
    decision: runtime.Runtime | None = None,
    template=None,
) -> list[str]:
    """Greedy answers to instruction records, in the order of `records`.

    Generation stops at EOS or when the answer starts the template's next
    section ("\n### "), so a model that keeps writing the template does not
    spend the rest of max_new_tokens on it.
    """
    task = "seq2seq" if is_seq2seq(model) else "causal"
    encoded = [prompts.encode_prompt(tokenizer, r, task, template) for r in records]
    new = generate_tokens(model, tokenizer, encoded, max_new_tokens, batch_size, decision, [prompts.SECTION_START])
    return [prompts.cut_at_next_section(text) for text in tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate_tokens(
    model,
    tokenizer,
    encoded: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    decision: runtime.Runtime | None = None,
    stop_strings: list[str] | None = None,
    sampling: dict | None = None,
) -> list[list[int]]:
    """The new tokens for each encoded prompt, up to and including its EOS, in the order of `encoded`.

    Batched with left padding and the KV cache on the model's device, prompts in order of length (less
    padding). A row stops at EOS, at max_new_tokens, or once its text contains a stop string (the string
    stays in it). Greedy unless `sampling` gives {temperature, top_p} (then sampled; seed torch first).
    """
    import torch

    seq2seq = is_seq2seq(model)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    new_tokens: dict[int, list[int]] = {}
    device = device_of(model)
    options = {"do_sample": True, **sampling} if sampling else {"do_sample": False}
    if stop_strings:
        options |= {"stop_strings": list(stop_strings), "tokenizer": tokenizer}
    with torch.no_grad(), runtime.autocast(decision) if decision else contextlib.nullcontext():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = prompts.pad_batch([{"input_ids": encoded[i]} for i in chunk], tokenizer.pad_token_id, side="left")
            generated = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                use_cache=True,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **options,
            )
            new = generated if seq2seq else generated[:, batch["input_ids"].shape[1] :]  # seq2seq: only the answer
            for i, row in zip(chunk, new.tolist()):
                new_tokens[i] = _through_eos(row, tokenizer.eos_token_id, skip=1 if seq2seq else 0)
    return [new_tokens[i] for i in range(len(encoded))]


def _through_eos(row: list[int], eos_id: int | None, skip: int = 0) -> list[int]:
    """A generated row up to and including its first EOS after the first `skip` tokens (a seq2seq decoder's start
    token, which may be EOS itself): what follows is padding."""
    if eos_id is None or eos_id not in row[skip:]:
        return row
    return row[: row.index(eos_id, skip) + 1]


def device_batch_size(model, requested: int, tokens_per_row: int, rows: int) -> int:
    """Rows per evaluation batch: the profile's on a CPU; on a GPU as many as a quarter of `room_bytes` holds.

    A row costs its KV cache (2 × layers × hidden × 2 bytes per token) plus
    activations of the same order; capped at the number of rows and 256.
    """
    device = device_of(model)
    if device.type != "cuda":
        return requested
    config = model.config
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", 1024)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 24)
    heads = getattr(config, "num_attention_heads", None) or 1
    kv_width = hidden * (getattr(config, "num_key_value_heads", None) or heads) // heads  # grouped-query attention
    per_row = 2 * layers * kv_width * 2 * tokens_per_row * 3
    return max(requested, min(256, rows, int(room_bytes(device) * 0.25 // max(per_row, 1))))


def room_bytes(device) -> float:
    """What this process may still fill on a CUDA device: the card's free memory, and, within a local GPU lease
    (BARBAROSSA_GPU_BUDGET_GB, set by infra/leases.py), no more than the lease less what this process's tensors
    hold. Free memory alone would count what other tasks sharing the card have leased but not loaded yet. Its
    tensors (memory_allocated), not what its allocator reserves: cached blocks are reused before it asks the
    card for more, so after training the lease is not counted as spent."""
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    leased = os.environ.get("BARBAROSSA_GPU_BUDGET_GB")
    if not leased:
        return free
    return min(free, max(0.0, float(leased) * 1e9 - torch.cuda.memory_allocated(device)))
