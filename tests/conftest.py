"""Shared fixtures: an isolated model cache and Metaflow root, tiny models built once."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

# patches `typing` in a way that a later first import of torch.export trips over
import evaluate  # noqa: F401  the same trap, reached through evaluate → transformers.pipelines → torch._dynamo
import pytest
import torch.export  # noqa: F401  before any in-process Metaflow Runner: Metaflow's vendored typing_extensions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory):
    """Metaflow needs a user name; caches, metadata and GPU leases stay inside the test session."""
    os.environ.setdefault("USERNAME", "barbarossa-tests")
    os.environ.setdefault("BARBAROSSA_CACHE", str(tmp_path_factory.mktemp("cache")))
    # the simulated GPUs' leases must not meet the machine's real ones (infra/leases.py's machine-wide folder)
    os.environ["BARBAROSSA_LEASE_DIR"] = str(tmp_path_factory.mktemp("gpu-leases"))
    metaflow_root = tmp_path_factory.mktemp("metaflow")
    os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(metaflow_root)
    (metaflow_root / ".metaflow").mkdir()
    os.chdir(metaflow_root)  # Metaflow's card store ignores the variable above and walks up from the cwd
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    yield


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(n: int, start: int = 0) -> list[dict]:
    """Distinct small Azerbaijani rows for data tests."""
    return [
        {
            "instruction": f"{i}-ci ədədi sözlə yazın.",
            "input": "" if i % 2 else f"Ədəd: {i}",
            "output": f"Bu, {i} ədədidir.",
        }
        for i in range(start, start + n)
    ]


# What a test may need beyond plain Python and tiny models; a test declares each with its marker
# (pytest.ini_options.markers in pyproject.toml), and `make test-fast` deselects all four.
NEEDS = {
    "flow": "runs a Metaflow flow",
    "server": "starts a server (moto S3, a proxy)",
    "browser": "renders a page in headless Chromium",
    "compile": "compiles with torch.compile's inductor backend",
}


def _need_of(command) -> str | None:
    """Which need a subprocess command line shows: a flow file, moto_server, or a browser."""
    words = [str(w) for w in command] if isinstance(command, (list, tuple)) else str(command).split()
    if any(w.endswith("_flow.py") for w in words):
        return "flow"
    if any(Path(w).name == "moto_server" for w in words):
        return "server"
    if words and Path(words[0]).name.startswith("chromium"):
        return "browser"
    return None


@pytest.fixture(autouse=True)
def declared_needs(request, monkeypatch):
    """A test that runs a flow, starts a server or a browser without its marker fails, naming the marker:
    so a new test cannot land in the fast tier by forgetting to say what it needs."""
    declared = {name for name in NEEDS if request.node.get_closest_marker(name)}
    if declared == set(NEEDS):
        return

    def refuse(need):
        pytest.fail(f"this test {NEEDS[need]}: mark it @pytest.mark.{need}", pytrace=False)

    popen = subprocess.Popen

    class CheckedPopen(popen):
        def __init__(self, args, *rest, **options):
            need = _need_of(args)
            if need and need not in declared:
                refuse(need)
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", CheckedPopen)
    if "flow" not in declared:
        from metaflow import Runner

        def no_runner(self, *args, **kwargs):
            refuse("flow")

        monkeypatch.setattr(Runner, "__init__", no_runner)
    if "compile" not in declared:
        _refuse_inductor(monkeypatch, refuse)


def _refuse_inductor(monkeypatch, refuse) -> None:
    """A model compiled by inductor (torch.compile of a module, or nn.Module.compile, which calls it) fails an
    unmarked test: inductor builds C++ kernels for every layer, ~30 s a test. Another backend (a test's failing
    one) costs a trace only, and a library compiling one function (transformers' FlexAttention) is its own."""
    import torch

    compile_ = torch.compile

    def checked(target=None, *args, **kwargs):
        module = target if isinstance(target, torch.nn.Module) else getattr(target, "__self__", None)
        if isinstance(module, torch.nn.Module) and kwargs.get("backend", "inductor") == "inductor":
            refuse("compile")
        return compile_(target, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", checked)


@pytest.fixture
def fp32_cpu(monkeypatch):
    """This CPU as one without native bf16 (AVX2 only), where precision "auto" means fp32.

    For tests that compare numbers at fp32 tolerance (1e-5 adapters, 1e-3 logits): a CPU with AVX512-BF16 or
    AMX runs bf16 natively, and there "auto" picks bf16 (runtime.probe), whose rounding those tolerances
    are not about."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)


@pytest.fixture(scope="session")
def tiny_llama():
    from barbarossa.engine import loading

    return loading.resolve("tiny:llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    from barbarossa.engine import loading

    return loading.resolve("tiny:gpt2")


def eos_appending(tokenizer):
    """The tokenizer made to end every encoded text with EOS, as T5-style tokenizers do."""
    from tokenizers import processors

    eos = tokenizer.eos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokenizer.eos_token_id)]
    )
    return tokenizer


class CountingTokenizer:
    """A tokenizer that counts how often it is called (everything else goes to the real one)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **options):
        self.calls += 1
        return self.tokenizer(*args, **options)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3(monkeypatch, bucket: str = "barbarossa-test"):
    """A real S3-compatible server (moto) on 127.0.0.1 for one test; yields 's3://<bucket>'.

    The endpoint and fake keys go into the environment (Metaflow and boto3 both read them).
    """
    from barbarossa import storage

    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for key, value in {
        "METAFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        deadline = time.time() + 30
        while True:
            try:
                storage.s3_client().create_bucket(Bucket=bucket)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield f"s3://{bucket}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def own_metaflow_root(folder: Path) -> dict:
    """Environment giving a flow run its own local metadata under `folder`.

    For runs whose datastore is an S3 server that stops with the test: in the
    session's shared metadata their runs would outlive the server, and a later
    flow's `history.last_releases` would wait on Metaflow's S3 retries to read them.
    """
    (folder / ".metaflow").mkdir(parents=True, exist_ok=True)
    return {"METAFLOW_DATASTORE_SYSROOT_LOCAL": str(folder)}


def render_in_chromium(html: str, folder: Path, window: str = "") -> str:
    """The DOM of a page after headless Chromium ran its scripts (Metaflow cards render client-side).

    `window` ("1280,900") fixes the viewport, for checks of what fits on screen."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed: `make test` installs it (apt-get install chromium)"
    page = folder / "page.html"
    page.write_text(html, encoding="utf-8")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=15000",
            "--dump-dom",
            *([f"--window-size={window}"] if window else []),
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def settings_for(item: dict, train: dict | None = None, eval: dict | None = None):
    """A work item's resolved settings from plain test tables (early-stopping keys may ride in `train`)."""
    from barbarossa import config

    early_keys = config.EarlyStopping.__dataclass_fields__
    train = dict(train or {})
    early = {k: train.pop(k) for k in list(train) if k in early_keys}
    profile = config.Profile.from_tables("test", train=train, early_stopping=early, eval=eval or {})
    return profile.for_item(item)


def finetune(item: dict, data_summary: dict, train: dict, out_uri: str, **kwargs) -> dict:
    """`loop.train` on plain test tables, for tests that only want the result dict (the model is dropped)."""
    from barbarossa.train import loop

    return loop.train(item, data_summary, settings_for(item, train), out_uri, **kwargs).result


def latest_step(out_uri: str) -> int:
    """The step of the latest complete checkpoint under `out_uri` (0 when there is none)."""
    from barbarossa.train import checkpoints

    return (checkpoints._latest(out_uri) or {}).get("step", 0)


@pytest.fixture
def scripted_llm():
    """A scripted OpenAI-compatible server on 127.0.0.1, in a thread (tests/scripted_llm.py): a teacher to test
    whatever asks one."""
    from scripted_llm import ScriptedServer

    with ScriptedServer() as server:
        yield server
