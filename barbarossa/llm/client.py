"""What every teacher backend shares: requests as plain dicts, answers cached by content, usage counted.

A request is the whole question (kind, prompt or messages, sampling, stops, log-probabilities, seed); its cache
key is the sha256 of it with the endpoint and the model, and never of the API key, which no request holds (a server
on this machine counts as one endpoint whatever its port: `barbarossa serve --port 0` picks a new one each run). The
cache is a local folder or an s3:// prefix (a run on a cluster keeps its output root on S3); an entry is written
whole (a temporary file renamed into place, or one S3 put), so a killed run leaves whole entries or none, and a rerun
or a resumed run is answered from them without a request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

from barbarossa import storage
from barbarossa.llm.responses import Completion
from barbarossa.llm.settings import Teacher


class ResponseCache:
    """Completions as JSON files under `folder` (a local folder or an s3:// prefix), named by the hash of what was
    asked."""

    def __init__(self, folder: Path | str):
        self.folder = str(folder)

    @staticmethod
    def key(endpoint: str, model: str, request: dict) -> str:
        asked = {"endpoint": endpoint, "model": model, "request": request}
        return hashlib.sha256(json.dumps(asked, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _uri(self, key: str) -> str:
        return storage.join(self.folder, key[:2], f"{key}.json")

    def get(self, key: str) -> Completion | None:
        try:
            entry = json.loads(storage.read_if_present(self._uri(key)) or b"null")
            return dataclasses.replace(Completion(**entry["completion"]), cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent (or not an entry this version wrote): ask again

    def put(self, key: str, request: dict, completion: Completion) -> None:
        """Serialised first, then written whole (storage.write_bytes): a failure leaves no entry."""
        entry = {"request": request, "completion": dataclasses.asdict(completion) | {"cached": False}}
        storage.write_bytes(self._uri(key), json.dumps(entry, ensure_ascii=False).encode("utf-8"))


class Options(TypedDict, total=False):
    """What `complete`, `chat` and `complete_many` take besides the prompt, and their defaults: max_tokens
    (the settings' max_tokens), temperature (1.0; 0: greedy), top_p (1.0), stop (none), logprobs (0: none; N:
    the top N per generated token) and seed (None: the server's choice)."""

    max_tokens: int | None
    temperature: float
    top_p: float
    stop: Sequence[str]
    logprobs: int
    seed: int | None


def request(kind: str, content, settings: Teacher, **options: Unpack[Options]) -> dict:
    """The whole question as a plain dict: what the cache keys on and what a backend answers."""
    unknown = sorted(set(options) - set(Options.__annotations__))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(Options.__annotations__)}")
    stop = options.get("stop") or ()
    return {
        "kind": kind,
        "messages" if kind == "chat" else "prompt": content,
        "max_tokens": options.get("max_tokens") or settings.max_tokens,
        "temperature": float(options.get("temperature", 1.0)),
        "top_p": float(options.get("top_p", 1.0)),
        "stop": [stop] if isinstance(stop, str) else list(stop),
        "logprobs": int(options.get("logprobs") or 0),
        "seed": options.get("seed"),
    }


class Client:
    """A teacher: `complete`, `chat`, `complete_many`; a subclass answers the requests the cache does not hold."""

    def __init__(self, settings: Teacher, cache_dir: Path | str | None, scope: str):
        """`scope`: where answers come from, as the cache keys them (an endpoint, "transformers")."""
        self.settings, self.scope = settings, scope
        self.cache = ResponseCache(cache_dir) if cache_dir is not None and settings.cache else None
        self._counts = dict.fromkeys(("requests", "cached", "retries", "prompt_tokens", "completion_tokens"), 0)
        self._lock = threading.Lock()

    @property
    def usage(self) -> dict:
        """Requests made, answers served from the cache, retries, and the tokens the requests cost."""
        with self._lock:
            return dict(self._counts)

    def count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self._counts[name] += amount

    def complete(self, prompt: str, **options: Unpack[Options]) -> Completion:
        """A raw-text continuation of `prompt` (/v1/completions); `logprobs=N`: the top N log-probabilities per
        generated token."""
        return self.complete_many([prompt], **options)[0]

    def chat(self, messages: list[dict], **options: Unpack[Options]) -> Completion:
        """The assistant's reply to `messages` ([{role, content}], the model's chat template applied)."""
        return self.answer([request("chat", messages, self.settings, **options)])[0]

    def complete_many(self, prompts: Sequence[str], **options: Unpack[Options]) -> list[Completion]:
        """`complete` for each prompt (the same keyword options), answers in the order of `prompts`."""
        return self.answer([request("completions", prompt, self.settings, **options) for prompt in prompts])

    def answer(self, requests: list[dict]) -> list[Completion]:
        """Each request answered from the cache or by the backend, in order. A fresh answer is cached as it
        arrives, so when a later request fails for good the earlier ones are not asked again on a rerun."""
        keys = [ResponseCache.key(self.scope, self.settings.model, r) for r in requests] if self.cache else []
        answers = [self.cache.get(key) for key in keys] if self.cache else [None] * len(requests)
        missing = [i for i, found in enumerate(answers) if found is None]
        self.count(cached=len(requests) - len(missing))

        def arrived(position: int, completion: Completion) -> None:
            i = missing[position]
            answers[i] = completion
            self.count(prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
            if self.cache:
                self.cache.put(keys[i], requests[i], completion)

        if missing:
            self.send([requests[i] for i in missing], arrived)
        return answers

    def send(self, requests: list[dict], arrived: Callable[[int, Completion], None]) -> None:
        """Answer `requests`, calling `arrived(position, completion)` for each as it comes (any order); count
        each request made."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds (connections, a loaded model)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
