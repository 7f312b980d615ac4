"""One answer of any backend, and the OpenAI-compatible response shapes read into it.

Servers disagree on how they return log-probabilities: OpenAI's completions give parallel `tokens` and
`top_logprobs` ({token: logprob}) lists; chat completions (OpenAI, vLLM, and llama.cpp on both endpoints) give
`content`, a list of tokens each with its own `top_logprobs` list; llama.cpp's native endpoint gives
`completion_probabilities` with `probs` (probabilities, not logs). All become one list of {token: logprob} per
generated token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    """The text a model generated, why it stopped ("stop", "length", ...), what it cost, and, when asked for, the
    top log-probabilities at each generated token. `cached`: served from the cache, no request made."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    top_logprobs: list[dict[str, float]] | None
    cached: bool = False


def parse(kind: str, body: dict) -> Completion:
    """A /v1/completions ("completions") or /v1/chat/completions ("chat") response body as a Completion."""
    choice = (body.get("choices") or [{}])[0]
    if kind == "chat":
        text = (choice.get("message") or {}).get("content") or ""
    else:
        text = choice.get("text") or ""
    usage = body.get("usage") or {}
    return Completion(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        top_logprobs=top_logprobs(choice.get("logprobs") or body.get("completion_probabilities")),
    )


def top_logprobs(logprobs) -> list[dict[str, float]] | None:
    """{token: logprob} per generated token from any of the shapes above; None when the server sent none."""
    if not logprobs:
        return None
    if isinstance(logprobs, list):  # llama.cpp's native completion_probabilities
        return [_alternatives(step) for step in logprobs]
    if logprobs.get("content") is not None:  # chat style (and llama.cpp on /v1/completions)
        return [_alternatives(step) for step in logprobs["content"]]
    tops = logprobs.get("top_logprobs")
    if tops is None:
        return None
    return [{str(token): float(value) for token, value in (top or {}).items()} for top in tops]


def _alternatives(step: dict) -> dict[str, float]:
    """One generated token's alternatives: entries with `logprob`, or llama.cpp's with `prob`."""
    entries = step.get("top_logprobs") or step.get("probs") or []
    found = {}
    for entry in entries:
        token = entry.get("token", entry.get("tok_str", ""))
        if "logprob" in entry:
            found[token] = float(entry["logprob"])
        elif "prob" in entry:
            found[token] = math.log(entry["prob"]) if entry["prob"] > 0 else -math.inf
    return found
