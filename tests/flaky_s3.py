"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 server (moto), for storage tests.

A seeded share of requests never reaches the server: the proxy answers 500
InternalError, 503 SlowDown (S3's throttling) or drops the connection without
an answer. Everything else is forwarded byte for byte. The proxy counts what
it did, and a test can hook requests (`on_request(method, path, client_port)`,
called before forwarding; returning "drop" closes the connection) — to kill the
very process whose write is held, for instance (`pid_of_client`).
"""

from __future__ import annotations

import http.client
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
FAULTS = ("500", "503", "drop")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def pid_of_client(port: int) -> int | None:
    """The process on this machine holding the TCP connection whose local port is `port` (from /proc)."""
    from pathlib import Path

    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(str(fd.readlink()) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # a process that ended meanwhile, or one we may not inspect
            continue
    return None


class FlakyS3:
    """`with FlakyS3(upstream, failure_rate=0.15, seed=0) as proxy:` — proxy.url goes where the S3 endpoint went."""

    def __init__(self, upstream: str, failure_rate: float = 0.15, seed: int = 0, on_request=None):
        self.upstream = urlsplit(upstream)
        self.failure_rate, self.on_request = failure_rate, on_request
        self.random, self.lock = random.Random(seed), threading.Lock()
        self.counts = {"requests": 0, "forwarded": 0, **dict.fromkeys(FAULTS, 0), "hooked": 0}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def failed(self) -> int:
        return sum(self.counts[fault] for fault in FAULTS)

    def __enter__(self) -> FlakyS3:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_):
        self.server.shutdown()
        self.server.server_close()

    def _fault(self) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            if self.random.random() >= self.failure_rate:
                return None
            fault = self.random.choice(FAULTS)
            self.counts[fault] += 1
            return fault

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`, as S3 speaks it

            def log_message(self, *_):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if not size:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                head = self.command == "HEAD"  # its Content-Length is the object's, with no body sent
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and (head or name.lower() != "content-length"):
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                if proxy.on_request and proxy.on_request(self.command, self.path, self.client_address[1]) == "drop":
                    proxy.counts["hooked"] += 1
                    self.close_connection = True
                    return
                fault = proxy._fault()
                if fault == "drop":
                    self.close_connection = True  # no answer at all: the client sees the connection reset
                    return
                if fault:
                    code, message = ERRORS[int(fault)]
                    xml = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message><RequestId>flaky</RequestId></Error>"
                    ).encode()
                    self._answer(int(fault), [("Content-Type", "application/xml")], xml)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in HOP_BY_HOP and k.lower() not in ("expect", "content-length")
                    }
                    if self.command not in ("GET", "HEAD", "DELETE") or body:
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    with proxy.lock:
                        proxy.counts["forwarded"] += 1
                    self._answer(response.status, response.getheaders(), payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
