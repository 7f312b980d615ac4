"""The teacher: one way to ask an LLM for text, whichever backend answers (docs/llm.md).

`connect(settings)` gives a client for an OpenAI-compatible endpoint (llama.cpp's server, vLLM, a hosted API) or
a local transformers model; `check(settings)` says in one line why it cannot be asked, before any work is
queued; `serve(gguf)` runs llama.cpp's server over a GGUF file on this machine.
"""

from __future__ import annotations

from pathlib import Path

from barbarossa.llm.client import Client, ResponseCache
from barbarossa.llm.responses import Completion
from barbarossa.llm.settings import EndpointError, Teacher

__all__ = ["Client", "Completion", "EndpointError", "ResponseCache", "Teacher", "check", "connect", "serve"]


def check(settings: Teacher) -> None:
    """EndpointError unless the teacher can be asked: the endpoint answers, the key variable named is set, the
    model is one the server lists (or, for transformers, a model folder or roster source that resolves)."""
    if settings.backend == "transformers":
        from barbarossa.llm import local

        local.check(settings)
    else:
        from barbarossa.llm import openai_api

        openai_api.check(settings)


def connect(settings: Teacher, cache_dir: Path | str | None = None) -> Client:
    """The client of the backend the settings name; answers cached under `cache_dir` (a folder or an s3:// prefix)
    when given and `settings.cache` is on."""
    if settings.backend == "transformers":
        from barbarossa.llm.local import LocalClient

        return LocalClient(settings, cache_dir)
    from barbarossa.llm.openai_api import HttpClient

    return HttpClient(settings, cache_dir)


def serve(gguf: str | Path | None = None, port: int = 0, threads: int = 1, ctx: int = 2048):
    """llama.cpp's server over a GGUF file (a path or `wheel-gguf:<module>/<file>`; default SmolLM2-135M), a
    context manager yielding a `server.Server` (.url, .model): see `server.serve`."""
    from barbarossa.llm import server

    return server.serve(gguf or server.DEFAULT_GGUF, port=port, threads=threads, ctx=ctx)
