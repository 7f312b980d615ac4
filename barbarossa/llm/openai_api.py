"""The OpenAI-compatible HTTP backend: /v1/completions and /v1/chat/completions of llama.cpp, vLLM or a hosted API.

A request that meets a rate limit (429), a server error (5xx), a refused connection or a timeout is retried with
exponential back-off and jitter, waiting at least what a Retry-After header asks, up to `max_retries` times. A
400 saying the request exceeds the context is retried once with half the `max_tokens`. The API key is read from
the variable `api_key_env` names and lives only in the connection's Authorization header: not in requests, cache
entries, logs or error messages.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2

from barbarossa.llm import responses
from barbarossa.llm.client import Client
from barbarossa.llm.settings import EndpointError, Teacher

BACKOFF_S = 0.5  # the first retry's wait; doubled each retry, capped at MAX_WAIT_S
MAX_WAIT_S = 60.0
RETRIED_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
CONTEXT_ERROR = re.compile(r"context.{0,12}(length|size|window)|too many tokens|exceed|maximum.{0,12}tokens", re.I)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PATHS = {"completions": "completions", "chat": "chat/completions"}


def api_key(settings: Teacher) -> str:
    """The key from the variable the settings name ("" when they name none); refused when it is unset."""
    if not settings.api_key_env:
        return ""
    key = os.environ.get(settings.api_key_env, "")
    if not key:
        raise EndpointError(
            f'api_key_env names ${settings.api_key_env}, which is not set: export it, or set api_key_env = ""'
        )
    return key


def http_client(settings: Teacher) -> httpx2.Client:
    """A connection pool to the endpoint, the key in its Authorization header (never elsewhere)."""
    key = api_key(settings)
    return httpx2.Client(
        base_url=settings.endpoint.rstrip("/") + "/",
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=settings.timeout_s,
        limits=httpx2.Limits(max_connections=max(settings.concurrency, 1)),
    )


def served_models(settings: Teacher, http: httpx2.Client) -> list[str]:
    """The model ids GET /v1/models lists (and llama.cpp's aliases); EndpointError when it cannot be asked."""
    try:
        response = http.get("models", timeout=min(settings.timeout_s, 10.0))
    except httpx2.TransportError as error:
        raise EndpointError(
            f"endpoint {settings.endpoint} is unreachable ({type(error).__name__}): start the server "
            "(`barbarossa serve` runs a local one) or fix `endpoint`"
        ) from None
    if response.status_code != 200:
        raise EndpointError(f"endpoint {settings.endpoint} answered GET /models with {_refusal(response)}")
    entries = response.json().get("data") or []
    return [name for entry in entries for name in [entry.get("id"), *(entry.get("aliases") or [])] if name]


def check(settings: Teacher) -> None:
    """The endpoint answers, the key variable is set, and the model is one the server serves."""
    with http_client(settings) as http:
        known = served_models(settings, http)
    if settings.model not in known:
        raise EndpointError(
            f"model {settings.model!r} is unknown to {settings.endpoint}; it serves: {', '.join(known) or 'none'}"
        )


def _refusal(response: httpx2.Response) -> str:
    """A refusal in one line: the status and the server's own message."""
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
    except ValueError:
        message = response.text
    return f"HTTP {response.status_code}: {' '.join(str(message).split())[:300]}"


def retry_after(response: httpx2.Response | None) -> float:
    """Seconds a Retry-After header asks for (a number or an HTTP date); 0 without one."""
    value = response.headers.get("retry-after", "") if response is not None else ""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else 0.0


def backoff(retry: int, asked: float = 0.0) -> float:
    """The wait before retry number `retry` (1, 2, ...): doubling from BACKOFF_S with up to 25% jitter, at least
    what the server asked, at most MAX_WAIT_S."""
    wait = min(MAX_WAIT_S, BACKOFF_S * 2 ** (retry - 1))
    return min(MAX_WAIT_S, max(asked, wait * (1 + random.uniform(0, 0.25))))


def cache_scope(endpoint: str) -> str:
    """The endpoint as the cache keys it: a server on this machine without its port, which `--port 0` changes
    from run to run (the model's name still tells its answers apart)."""
    url = httpx2.URL(endpoint.rstrip("/"))
    if url.host in LOOPBACK:
        return f"{url.scheme}://localhost{url.path}"
    return str(url)


def body_of(request: dict, model: str) -> dict:
    """The JSON body an OpenAI-compatible server takes for a request."""
    body = {"model": model, "max_tokens": request["max_tokens"], "temperature": request["temperature"]}
    body["top_p"] = request["top_p"]
    if request["kind"] == "chat":
        body["messages"] = request["messages"]
        if request["logprobs"]:
            body |= {"logprobs": True, "top_logprobs": request["logprobs"]}
    else:
        body["prompt"] = request["prompt"]
        if request["logprobs"]:
            body["logprobs"] = request["logprobs"]
    if request["stop"]:
        body["stop"] = request["stop"]
    if request["seed"] is not None:
        body["seed"] = request["seed"]
    return body


class HttpClient(Client):
    """A teacher behind an OpenAI-compatible endpoint; `complete_many` keeps `concurrency` requests in flight."""

    def __init__(self, settings: Teacher, cache_dir=None):
        super().__init__(settings, cache_dir, scope=cache_scope(settings.endpoint))
        self.endpoint = settings.endpoint.rstrip("/")
        self.http = http_client(settings)

    def close(self) -> None:
        self.http.close()

    def send(self, requests, arrived) -> None:
        def one(position: int) -> None:
            arrived(position, self.ask(requests[position]))

        if len(requests) == 1 or self.settings.concurrency == 1:
            for position in range(len(requests)):
                one(position)
            return
        with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, len(requests))) as pool:
            for done in [pool.submit(one, position) for position in range(len(requests))]:
                done.result()  # the first failure, once the others have finished (and been cached)

    def ask(self, request: dict) -> responses.Completion:
        """One request, retried as the module says; EndpointError when it is refused or the retries are spent."""
        body, path = body_of(request, self.settings.model), PATHS[request["kind"]]
        retries, shrunk = 0, False
        while True:
            self.count(requests=1)
            try:
                response = self.http.post(path, json=body)
            except httpx2.TransportError as error:  # refused connection, timeout, dropped connection
                response, failure = None, type(error).__name__
            else:
                if response.status_code == 200:
                    try:
                        return responses.parse(request["kind"], response.json())
                    except ValueError:
                        pass  # a body cut short: asked again
                failure = _refusal(response)
                if response.status_code == 400 and not shrunk and CONTEXT_ERROR.search(failure):
                    body, shrunk = body | {"max_tokens": max(1, body["max_tokens"] // 2)}, True
                    self.count(retries=1)
                    continue
                if response.status_code not in RETRIED_STATUS | {200}:
                    raise EndpointError(f"{self.endpoint}/{path} refused the request: {failure}")
            retries += 1
            if retries > self.settings.max_retries:
                raise EndpointError(f"{self.endpoint}/{path}: gave up after {retries - 1} retries ({failure})")
            self.count(retries=1)
            time.sleep(backoff(retries, retry_after(response)))
