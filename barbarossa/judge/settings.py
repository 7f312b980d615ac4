"""The judge's settings: a `[judge]` table naming the model that compares two answers, how many prompts it reads,
which candidates it judges and how its numbers are drawn.

The judge is a teacher to the endpoint layer (barbarossa/llm/): `teacher()` gives the `llm.Teacher` it is asked
through, so retries, the key kept out of requests and the content cache are the same. Judging is off until a
profile (or `--judge URL`) names an endpoint and a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from barbarossa.config import Section, SettingError, setting
from barbarossa.llm.settings import BACKENDS, Teacher

MODES = ("auto", "logprobs", "text")


@dataclass(frozen=True)
class Judge(Section):
    """Pairwise judging of greedy answers against the base's and the last release's (docs/judge.md)."""

    TABLE = "judge"
    endpoint: str = setting("", 'the judge\'s base URL ending in /v1; "": no judging')
    model: str = setting("", 'the model the endpoint serves (GET /v1/models); "": no judging')
    api_key_env: str = setting("", 'environment variable holding the API key, sent as a Bearer token; "": no key')
    backend: str = setting(
        "openai", "openai: an OpenAI-compatible endpoint; transformers: a local model", choices=BACKENDS
    )
    prompts: int = setting(16, "held-out prompts judged per comparison (the first ones, the same for every model)")
    top_k: int = setting(0, "judge the best k candidates by the primary metric; 0: every candidate")
    mode: str = setting(
        "auto",
        "logprobs: the verdict read from the label's log-probabilities; text: [[A]] / [[B]] / [[C]] parsed; "
        "auto: log-probabilities where the server returns them",
        choices=MODES,
    )
    max_tokens: int = setting(16, "tokens a verdict may run to")
    logprobs: int = setting(10, "top log-probabilities asked per verdict token (logprobs and auto modes)")
    concurrency: int = setting(4, "verdicts asked at once")
    bootstrap_samples: int = setting(1000, "resamples of the judged prompts for the win rate's interval")
    confidence: float = setting(0.95, "level of the win rate's interval")
    seed: int = setting(0, "seed of the resampling, and sent with each request (greedy verdicts need none)")

    @property
    def enabled(self) -> bool:
        """Whether anything is judged: an endpoint (or a local model) and a model are named."""
        return bool(self.model) and (bool(self.endpoint) or self.backend == "transformers")

    def teacher(self) -> Teacher:
        """The endpoint layer's settings for asking this judge (greedy verdicts, cached by content)."""
        return Teacher(
            backend=self.backend,
            endpoint=self.endpoint or Teacher.endpoint,
            model=self.model,
            api_key_env=self.api_key_env,
            concurrency=self.concurrency,
            max_tokens=self.max_tokens,
        )

    def check(self) -> None:
        for key in ("prompts", "max_tokens", "concurrency"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"must be at least 1, got {getattr(self, key)}")
        for key in ("top_k", "logprobs"):
            if getattr(self, key) < 0:
                raise SettingError(key, f"must be 0 or more, got {getattr(self, key)}")
        if self.bootstrap_samples < 100:
            raise SettingError("bootstrap_samples", f"must be at least 100, got {self.bootstrap_samples}")
        if not 0 < self.confidence < 1:
            raise SettingError("confidence", f"must be between 0 and 1, got {self.confidence}")
        if self.backend == "openai" and bool(self.endpoint) != bool(self.model):
            missing = "model (--judge-model)" if self.endpoint else "endpoint (--judge)"
            raise SettingError(
                missing.split()[0], f"must be named too: a judge needs an endpoint and a model ({missing})"
            )
        if self.endpoint and not self.endpoint.rstrip("/").endswith("/v1"):
            raise SettingError("endpoint", f"must be a base URL ending in /v1, got {self.endpoint!r}")
