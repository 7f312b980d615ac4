"""The judge's settings are the profile's `[judge]` table (`config.Judge`: a foundation module reads profiles);
here is how the judge is asked: as a teacher of the endpoint layer (barbarossa/llm/), so retries, the key kept out
of requests and the content cache are the same as self-instruct's.
"""

from __future__ import annotations

from barbarossa.config import Judge
from barbarossa.llm.settings import Teacher

__all__ = ["Judge", "teacher"]


def teacher(settings: Judge) -> Teacher:
    """The endpoint layer's settings for asking this judge (greedy verdicts, cached by content)."""
    return Teacher(
        backend=settings.backend,
        endpoint=settings.endpoint or Teacher.endpoint,
        model=settings.model,
        api_key_env=settings.api_key_env,
        concurrency=settings.concurrency,
        max_tokens=settings.max_tokens,
    )
