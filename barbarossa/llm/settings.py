"""The teacher's settings: which backend answers, where, as which model, with what patience.

A `[teacher]` table names an OpenAI-compatible endpoint (a local llama.cpp server from `barbarossa serve`, vLLM on a
GPU machine, a hosted API) or a local transformers model; docs/llm.md shows both.
"""

from __future__ import annotations

from dataclasses import dataclass

from barbarossa.config import LLM_BACKENDS, Section, SettingError, setting
from barbarossa.errors import UserError


class EndpointError(UserError):
    """The teacher cannot be asked: unreachable, refused, unknown model, a key variable unset, retries spent."""

    headline = "Teacher"


@dataclass(frozen=True)
class Teacher(Section):
    """The LLM that writes or judges data (barbarossa/llm/): an OpenAI-compatible endpoint or a local model."""

    TABLE = "teacher"
    ERROR = EndpointError
    backend: str = setting(
        "openai", "openai: an OpenAI-compatible HTTP endpoint; transformers: a local model", choices=LLM_BACKENDS
    )
    endpoint: str = setting("http://127.0.0.1:8080/v1", "base URL ending in /v1 (openai backend)")
    model: str = setting(
        "",
        "the model the endpoint serves (GET /v1/models); transformers: a model folder or roster source",
        required=True,
    )
    api_key_env: str = setting("", 'environment variable holding the API key, sent as a Bearer token; "": no key')
    timeout_s: float = setting(120.0, "seconds one request may take before it is retried")
    max_retries: int = setting(5, "retries of a request on 429, 5xx, timeouts and refused connections")
    concurrency: int = setting(4, "requests in flight at once in complete_many")
    max_tokens: int = setting(3072, "tokens generated per answer unless a call says fewer (Alpaca's: 3072)")
    cache: bool = setting(True, "answers cached by content, so a rerun or a resumed run asks nothing twice")

    def check(self) -> None:
        if self.backend == "openai" and not self.endpoint.rstrip("/").endswith("/v1"):
            raise SettingError("endpoint", f"must be a base URL ending in /v1, got {self.endpoint!r}")
        for key in ("concurrency", "max_tokens"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"must be at least 1, got {getattr(self, key)}")
        if self.max_retries < 0:
            raise SettingError("max_retries", f"must be 0 or more, got {self.max_retries}")
        if self.timeout_s <= 0:
            raise SettingError("timeout_s", f"must be positive, got {self.timeout_s}")
