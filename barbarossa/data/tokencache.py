"""Training examples tokenised once per tokenizer, then read by every task that needs them.

At Alpaca size (52K rows) tokenising takes tens of seconds, and every candidate of
a run that shares a base tokenizer would pay it again. The first call (the flow's
`start` step, through `warm`) tokenises in batches and writes the examples as ONE
compact file, `<cache_root>/tokens/<key>.npz`: flat uint16/int32 token arrays plus
row offsets, not a JSON row per example. Later calls — other tasks, processes or
machines — read that file. The key hashes everything the tokens depend on: the
tokenizer's own definition, the data fingerprint, max_length, the task, the
response minimum, the prompt template and this file's format version.
"""

from __future__ import annotations

import hashlib
import io
import json
from itertools import chain

from barbarossa import storage
from barbarossa.data import instructions, prompts

FORMAT_VERSION = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """Same value for the same tokenizer files in any process or machine; another tokenizer gets another value.

    A fast tokenizer is defined by its backend's JSON (vocabulary, merges,
    normalizer, pre-tokenizer, post-processor with its special tokens); a slow one
    by its vocabulary. The class and special-token settings are added because they
    change the ids without being in that JSON.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    identity = {
        "class": type(tokenizer).__name__,
        "definition": hashlib.sha256(definition.encode("utf-8")).hexdigest(),
        "special_tokens": {
            k: v for k, v in tokenizer.special_tokens_map.items() if k != "pad_token"
        },  # padding: no id changes
        "eos_token_id": tokenizer.eos_token_id,
        "add_bos_token": getattr(tokenizer, "add_bos_token", None),
        "add_eos_token": getattr(tokenizer, "add_eos_token", None),
    }
    return _digest(identity)


def _template_fingerprint(template=None) -> str:
    """Changes whenever the prompt template (its language included) or the label mask does: old tokens never reused."""
    return _digest(
        [
            prompts.render_prompt("\x00", "", template),
            prompts.render_prompt("\x00", "\x01", template),
            prompts.IGNORE_INDEX,
        ]
    )


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]


def cache_uri(
    tokenizer,
    data_fingerprint: str,
    max_length: int,
    task: str,
    cache_root_uri: str,
    min_response_tokens: int = 8,
    template=None,
) -> str:
    """Where the examples of this tokenizer, data and settings live (local path or s3:// URI)."""
    key = _digest(
        {
            "format": FORMAT_VERSION,
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "template": _template_fingerprint(template),
            "data": data_fingerprint,
            "max_length": max_length,
            "task": task,
            "min_response_tokens": min_response_tokens,
        }
    )
    return storage.join(cache_root_uri, "tokens", f"{key}.npz")


def warm(
    tokenizer,
    train_uri: str,
    data_fingerprint: str,
    max_length: int,
    task: str,
    cache_root_uri: str,
    min_response_tokens: int = 8,
    template=None,
) -> str:
    """Make sure the cache file exists (tokenise and write it if not); returns its URI.

    Call once per distinct tokenizer in the step before the fan-out, so that the
    parallel training tasks read instead of all tokenising at once.
    """
    uri = cache_uri(tokenizer, data_fingerprint, max_length, task, cache_root_uri, min_response_tokens, template)
    if not storage.exists(uri):
        _build(tokenizer, train_uri, max_length, task, min_response_tokens, uri, template)
    return uri


def examples_for(
    tokenizer,
    train_uri: str,
    data_fingerprint: str,
    max_length: int,
    task: str,
    cache_root_uri: str,
    min_response_tokens: int = 8,
    template=None,
) -> tuple[list[dict], int]:
    """(examples, dropped rows) of the training split: read from the cache, or tokenised and cached now.

    The examples equal `prompts.build_examples` on the rows of `train_uri`, with the
    dropped (None) rows left out. `data_fingerprint` must be that file's fingerprint
    (the data summary's `train_fingerprint`): a cache hit does not read the rows.
    """
    uri = cache_uri(tokenizer, data_fingerprint, max_length, task, cache_root_uri, min_response_tokens, template)
    if storage.exists(uri):
        return decode(storage.read_bytes(uri))
    return _build(tokenizer, train_uri, max_length, task, min_response_tokens, uri, template)


def tokenize(
    tokenizer, records: list[dict], max_length: int, task: str = "causal", min_response_tokens: int = 8, template=None
) -> tuple[list[dict], int]:
    """(examples, rows dropped as too long or without enough response), tokenised in batches."""
    built = prompts.build_examples(tokenizer, records, max_length, min_response_tokens, task, template)
    kept = [example for example in built if example is not None]
    return kept, len(built) - len(kept)


def training_examples(tokenizer, data_summary: dict, max_length: int, task: str) -> tuple[list[dict], int]:
    """The training split's examples, in the run's template: from the run's token cache when `start` warmed one,
    else tokenised here."""
    template = prompts.template_of(data_summary.get("language"))
    if data_summary.get("token_cache"):
        return examples_for(
            tokenizer,
            data_summary["train_uri"],
            data_summary["train_fingerprint"],
            max_length,
            task,
            data_summary["token_cache"],
            template=template,
        )
    return tokenize(tokenizer, instructions.read_jsonl(data_summary["train_uri"]), max_length, task, template=template)


def _build(tokenizer, train_uri: str, max_length: int, task: str, min_response_tokens: int, uri: str, template=None):
    """Tokenise the split (batched) and write the file whole: a concurrent reader never sees half of it."""
    examples, dropped = tokenize(
        tokenizer, instructions.read_jsonl(train_uri), max_length, task, min_response_tokens, template
    )
    storage.write_bytes(uri, encode(examples, dropped, task))
    return examples, dropped


# --------------------------------------------------------------------------- the file format


def encode(examples: list[dict], dropped: int, task: str) -> bytes:
    """An .npz of flat token arrays and row offsets.

    Causal examples store only the prompt length of each row, since their labels
    are the input ids with the prompt masked; seq2seq examples store their labels.
    """
    import numpy as np

    arrays = {"dropped": np.array(dropped, dtype=np.int64)}
    arrays["input_ids"], arrays["input_offsets"] = _flatten([e["input_ids"] for e in examples])
    if task == "seq2seq":
        arrays["labels"], arrays["label_offsets"] = _flatten([e["labels"] for e in examples])
    else:
        arrays["prompt_lengths"] = np.array([e["labels"].count(prompts.IGNORE_INDEX) for e in examples], dtype=np.int32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode(blob: bytes) -> tuple[list[dict], int]:
    """(examples, dropped) back from `encode`'s bytes, as lists of ints like `build_examples` gives."""
    import numpy as np

    with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
        input_ids = _rows(arrays["input_ids"], arrays["input_offsets"])
        if "labels" in arrays:
            labels = _rows(arrays["labels"], arrays["label_offsets"])
        else:
            labels = [_masked(ids, n) for ids, n in zip(input_ids, arrays["prompt_lengths"].tolist())]
        dropped = int(arrays["dropped"])
    return [{"input_ids": ids, "labels": lab} for ids, lab in zip(input_ids, labels)], dropped


def _flatten(rows: list[list[int]]):
    """One array of every row's ids (uint16 when they fit, else int32) and the rows' start offsets."""
    import numpy as np

    values = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=sum(map(len, rows)))
    fits = values.size == 0 or (values.min() >= 0 and values.max() < 2**16)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    return values.astype(np.uint16 if fits else np.int32), offsets


def _rows(values, offsets) -> list[list[int]]:
    bounds = offsets.tolist()
    return [values[start:end].tolist() for start, end in zip(bounds, bounds[1:])]


def _masked(ids: list[int], prompt_length: int) -> list[int]:
    """Causal labels: the ids with the prompt masked (copy-then-assign is ~4× faster than concatenating)."""
    labels = ids.copy()
    labels[:prompt_length] = [prompts.IGNORE_INDEX] * prompt_length
    return labels
