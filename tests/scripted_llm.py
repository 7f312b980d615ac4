"""A scripted OpenAI-compatible server on 127.0.0.1, in a thread, for tests of whatever asks a teacher.

It serves GET /v1/models and POST /v1/completions and /v1/chat/completions. Each POST is answered by the next
`Reply` a test queued (`server.queue(...)`), else by `server.answer(path, body)` — by default an echo: the
prompt (or the last message) back, "echo: " first. Every request is recorded (path, JSON body, headers), so a
test can count requests and read what was sent. A reply may wait `delay_s` before answering (a timeout) or
carry any status and headers (429 with Retry-After, 500, a 400 about the context length).

    with ScriptedServer() as server:             # or the `scripted_llm` fixture (tests/conftest.py)
        server.queue(Reply(429, headers={"Retry-After": "0"}))
        settings = llm.Teacher(endpoint=server.url, model=server.models[0])
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: a status, a JSON body (a dict) or raw text, headers, a wait before answering."""

    status: int = 200
    body: dict | str = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Recorded:
    path: str
    body: dict
    headers: dict


def completion_body(text: str, finish_reason: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 2,
                    logprobs: list[dict[str, float]] | None = None) -> dict:  # fmt: skip
    """A /v1/completions answer as OpenAI shapes it (log-probabilities: parallel tokens / top_logprobs lists)."""
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    if logprobs is not None:
        choice["logprobs"] = {
            "tokens": [max(top, key=top.get) for top in logprobs],
            "token_logprobs": [max(top.values()) for top in logprobs],
            "top_logprobs": logprobs,
        }
    return {"object": "text_completion", "choices": [choice], "usage": _usage(prompt_tokens, completion_tokens)}


def chat_body(text: str, finish_reason: str = "stop", prompt_tokens: int = 3, completion_tokens: int = 2,
              logprobs: list[dict[str, float]] | None = None) -> dict:  # fmt: skip
    """A /v1/chat/completions answer (log-probabilities: `content`, each token with its top_logprobs list)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    if logprobs is not None:
        content = []
        for top in logprobs:
            chosen = max(top, key=top.get)
            alternatives = [{"token": token, "logprob": value} for token, value in top.items()]
            content.append({"token": chosen, "logprob": top[chosen], "top_logprobs": alternatives})
        choice["logprobs"] = {"content": content}
    return {"object": "chat.completion", "choices": [choice], "usage": _usage(prompt_tokens, completion_tokens)}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def echo(path: str, body: dict) -> Reply:
    """The default answer: what was asked, back, "echo: " first; one word is one token."""
    if path.endswith("/chat/completions"):
        text = "echo: " + body["messages"][-1]["content"]
        return Reply(body=chat_body(text, prompt_tokens=len(str(body["messages"]).split()), completion_tokens=2))
    text = "echo: " + body["prompt"]
    return Reply(body=completion_body(text, prompt_tokens=len(body["prompt"].split()), completion_tokens=2))


class ScriptedServer:
    """The server: `url` (".../v1"), `models` it lists, `requests` it received, `queue(...)` of replies."""

    def __init__(self, models: tuple[str, ...] = ("scripted-model",), answer=echo):
        self.models, self.answer = list(models), answer
        self.requests: list[Recorded] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def posts(self, path_end: str = "completions") -> list[Recorded]:
        """The POSTs received whose path ends in `path_end`."""
        return [r for r in self.requests if r.path.endswith(path_end)]

    def _reply_to(self, path: str, body: dict, headers: dict) -> Reply:
        with self._lock:
            self.requests.append(Recorded(path, body, headers))
            queued = self._replies.popleft() if self._replies else None
        return queued or self.answer(path, body)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: pytest shows what a test prints
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(Reply(body={"object": "list", "data": [{"id": m} for m in server.models]}))
                else:
                    self._send(Reply(404, {"error": {"message": f"no route {self.path}"}}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                reply = server._reply_to(self.path, body, dict(self.headers))
                time.sleep(reply.delay_s)
                self._send(reply)

            def _send(self, reply: Reply):
                data = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                    self.send_response(reply.status)
                    for name, value in {"Content-Type": "application/json", **reply.headers}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        return Handler

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
