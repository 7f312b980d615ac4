"""Weights from one mirror per deployment: what is fetched, the mirror on disk and on S3, the hub's failures.

No test reaches the Hugging Face Hub: a "hub" here is a local folder of repos
(`FolderHub`), and the offline case runs the real hub client with HF_HUB_OFFLINE.
"""

import json
import re
import shutil

import pytest
from conftest import moto_s3

from barbarossa import cli
from barbarossa.engine import loading
from barbarossa.models import cache, weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKENIZER = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]


def test_safetensors_win_over_bin_and_other_runtimes_are_left_out():
    gpt2 = [
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "rust_model.ot",
        "64-8bits.tflite",
        "merges.txt",
        "vocab.json",
        "README.md",
        ".gitattributes",
        "onnx/config.json",
        "onnx/decoder_model.onnx",
        "onnx/tokenizer.json",
        *TOKENIZER,
    ]
    assert weights.hub_patterns(gpt2) == sorted(
        ["config.json", "model.safetensors", "merges.txt", "vocab.json", *TOKENIZER]
    )


def test_sharded_safetensors_keep_their_index_and_skip_consolidated_and_bin_shards():
    mistral = [
        "config.json",
        "consolidated.safetensors",
        "params.json",
        "tokenizer.model",
        "tokenizer.model.v3",
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "original/consolidated.00.pth",
        "original/params.json",
        *TOKENIZER,
    ]
    chosen = weights.hub_patterns(mistral)
    assert [p for p in chosen if "safetensors" in p] == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
    ]
    assert "tokenizer.model" in chosen and not any(".bin" in p or "/" in p or "consolidated" in p for p in chosen)


def test_bin_only_repo_takes_its_bin_shards_and_index_but_not_training_args():
    old = [
        "config.json",
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json",
        "training_args.bin",
        "vocab.txt",
        "added_tokens.json",
        *TOKENIZER,
    ]
    assert weights.hub_patterns(old) == sorted(
        [
            "config.json",
            "pytorch_model-00001-of-00002.bin",
            "pytorch_model-00002-of-00002.bin",
            "pytorch_model.bin.index.json",
            "vocab.txt",
            "added_tokens.json",
            *TOKENIZER,
        ]
    )


def test_t5_keeps_its_sentencepiece_model_and_code_comes_only_with_remote_code():
    t5 = [
        "config.json",
        "spiece.model",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "flax_model.msgpack",
        "tokenizer.json",
        "generation_config.json",
    ]
    assert weights.hub_patterns(t5) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "spiece.model",
        "tokenizer.json",
    ]
    deci = ["config.json", "configuration_decilm.py", "modeling_decilm.py", "model.safetensors", "qwen.tiktoken"]
    assert "modeling_decilm.py" not in weights.hub_patterns(deci)
    assert weights.hub_patterns(deci, remote_code=True) == [
        "config.json",
        "configuration_decilm.py",
        "model.safetensors",
        "modeling_decilm.py",
        "qwen.tiktoken",
    ]


def test_hub_errors_become_one_line_saying_what_to_do():
    import httpx2
    from huggingface_hub import errors

    base = {"name": "gated-llama", "source": "hf:org/llama", "revision": "v9"}
    response = httpx2.Response(404, request=httpx2.Request("GET", "https://hub.invalid/api/models/org/llama"))
    for err, says in [
        (errors.GatedRepoError("gated", response=response), "gated.*HF_TOKEN"),
        (errors.RevisionNotFoundError("no rev", response=response), "revision 'v9' does not exist"),
        (errors.RepositoryNotFoundError("none", response=response), "does not exist or is private"),
    ]:
        message = str(weights.unavailable(base, err))
        assert "\n" not in message and "gated-llama (hf:org/llama, revision v9)" in message
        assert "BARBAROSSA_WEIGHTS" in message and "barbarossa fetch" in message
        assert re.search(says, message), message


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The real hub client, offline, with an empty model cache and no mirror."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, when huggingface_hub is imported
    monkeypatch.setenv("BARBAROSSA_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv(weights.ENV, raising=False)


def test_offline_with_an_empty_cache_raises_one_clear_error(offline_hub):
    with pytest.raises(weights.WeightsUnavailable) as raised:
        loading.resolve("hf:EleutherAI/gpt-neo-125m", "main")
    message = str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__ and "\n" not in message
    assert "weights of hf:EleutherAI/gpt-neo-125m (revision main)" in message and "the hub did not serve it" in message
    assert "BARBAROSSA_WEIGHTS" in message and "barbarossa fetch" in message
    base = {"name": "gpt-neo-125m", "source": "hf:EleutherAI/gpt-neo-125m", "revision": None}
    with pytest.raises(
        weights.WeightsUnavailable, match=r"gpt-neo-125m \(hf:EleutherAI/gpt-neo-125m, revision default"
    ):
        loading.load_base_tokenizer(base)


def test_offline_a_warm_hub_cache_serves_what_loading_needs(offline_hub, tiny_gpt2):
    """The repo's file list comes from the hub cache's listing, so files never fetched (onnx/) are not missed."""
    repo = cache.cache_root() / "hub" / "models--test-org--tiny-gpt2"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(tiny_gpt2, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    listed = [p.name for p in snapshot.iterdir()] + ["pytorch_model.bin", "onnx/config.json", "onnx/model.onnx"]
    (repo / "trees").mkdir()
    (repo / "trees" / f"{COMMIT}.json").write_text(
        json.dumps({"format_version": 1, "files": {name: {"size": 1, "blob_id": "0" * 40} for name in listed}})
    )
    assert loading.resolve("hf:test-org/tiny-gpt2") == snapshot
    assert loading.load_base_tokenizer({"source": "hf:test-org/tiny-gpt2"}).eos_token


class FolderHub:
    """A stand-in hub: each repo is a folder under `root`; every revision is the same commit."""

    def __init__(self, root):
        self.root = root

    def listing(self, repo, revision):
        folder = self.root / repo
        if not folder.is_dir():
            raise FileNotFoundError(f"no repo {repo} in {self.root}")
        return COMMIT, sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def download(self, repo, revision, patterns):
        assert revision == COMMIT, "fetch downloads the commit it resolved, not the branch"
        return self.root / repo


class NoHub:
    def __getattr__(self, name):
        raise AssertionError("the hub was asked although the mirror holds the base")


@pytest.fixture
def fake_hub(tmp_path, tiny_gpt2, monkeypatch):
    """A hub holding a tiny GPT-2 beside files loading does not need; `weights.Hub` points at it."""
    repo = tmp_path / "hub" / "test-org" / "tiny-gpt2"
    shutil.copytree(tiny_gpt2, repo)
    (repo / "pytorch_model.bin").write_bytes(b"not needed")
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"not needed")
    (repo / "README.md").write_text("# tiny")
    hub = FolderHub(tmp_path / "hub")
    monkeypatch.setattr(weights, "Hub", lambda: hub)
    return hub


def write_roster(folder, monkeypatch):
    """A roster with a hub base twice (one mirror), a pinned one, a locally built one and a missing one."""
    base = 'family = "gpt2"\ncertainty = "confirmed"\nlicence = "mit"\nparams = "0.2M"\n'
    folder.mkdir()
    (folder / "mirrortest.toml").write_text(
        f'[[base]]\nname = "tiny-hub"\nsource = "hf:test-org/tiny-gpt2"\n{base}'
        f'[[base]]\nname = "tiny-hub-pinned"\nsource = "hf:test-org/tiny-gpt2"\nrevision = "v1"\n{base}'
        f'[[base]]\nname = "tiny-local"\nsource = "tiny:gpt2"\n{base}'
        f'[[base]]\nname = "gone"\nsource = "hf:test-org/gone"\n{base}'
        + "".join(
            f'[[candidate]]\nname = "{n}-a"\nbase = "{n}"\n[[candidate]]\nname = "{n}-b"\nbase = "{n}"\n'
            for n in ("tiny-hub", "tiny-hub-pinned", "tiny-local", "gone")
        )
    )
    monkeypatch.setenv("BARBAROSSA_ROSTERS", str(folder))


def test_fetch_mirrors_each_base_once_and_models_load_from_the_folder(fake_hub, tmp_path, monkeypatch, capsys):
    write_roster(tmp_path / "rosters", monkeypatch)
    mirror = tmp_path / "mirror"
    assert cli.main(["fetch", "--models", "mirrortest+tiny-hub-a,tiny-local-a", "--to", str(mirror)]) == 0
    out = capsys.readouterr().out
    assert "tiny-local: skipped" in out and f"BARBAROSSA_WEIGHTS={mirror}" in out
    assert "tiny-hub: " in out and "MB" in out and "commit 0123456789ab" in out
    folder = mirror / "test-org--tiny-gpt2@default"
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert (
        manifest["source"] == "hf:test-org/tiny-gpt2" and manifest["revision"] is None and manifest["commit"] == COMMIT
    )
    names = sorted(f["name"] for f in manifest["files"])
    assert names == sorted(p.name for p in folder.iterdir() if p.name != "MANIFEST.json")
    assert "model.safetensors" in names and "config.json" in names
    assert not {"pytorch_model.bin", "README.md", "SOURCE", "onnx"} & set(names)

    monkeypatch.setenv(weights.ENV, str(mirror))
    monkeypatch.setattr(weights, "Hub", NoHub)
    assert loading.resolve("hf:test-org/tiny-gpt2") == folder
    model = loading.load_model(loading.resolve("hf:test-org/tiny-gpt2"), "gpt2")
    assert model.config.model_type == "gpt2"
    assert loading.load_base_tokenizer({"source": "hf:test-org/tiny-gpt2", "revision": None}).eos_token


@pytest.mark.server
def test_a_half_written_mirror_is_not_used_and_a_failed_base_is_one_line(fake_hub, tmp_path, monkeypatch, capsys):
    write_roster(tmp_path / "rosters", monkeypatch)
    mirror = tmp_path / "mirror"
    assert cli.main(["fetch", "--models", "mirrortest", "--to", str(mirror)]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "gone (hf:test-org/gone, revision default branch)" in failed[0]
    assert (mirror / "test-org--tiny-gpt2@v1" / "MANIFEST.json").exists()

    (mirror / "test-org--tiny-gpt2@v1" / "MANIFEST.json").unlink()  # as if the copy stopped before its manifest
    pinned = {"name": "tiny-hub-pinned", "source": "hf:test-org/tiny-gpt2", "revision": "v1"}
    assert weights.mirror_folder(pinned, str(mirror)) is None
    (mirror / "test-org--tiny-gpt2@default" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(weights.WeightsUnavailable, match="model.safetensors is missing or not"):
        weights.mirror_folder({"source": "hf:test-org/tiny-gpt2"}, str(mirror))


@pytest.fixture
def s3_server(monkeypatch):
    with moto_s3(monkeypatch) as bucket:
        yield bucket


@pytest.mark.server
def test_an_s3_mirror_is_downloaded_once_and_loads_without_the_hub(fake_hub, s3_server, tmp_path, monkeypatch):
    base = {"name": "tiny-hub", "source": "hf:test-org/tiny-gpt2", "revision": "v1", "remote_code": False}
    where = weights.fetch_base(base, f"{s3_server}/weights")
    assert where == f"{s3_server}/weights/test-org--tiny-gpt2@v1"
    assert weights.read_manifest(where)["revision"] == "v1"

    monkeypatch.setenv("BARBAROSSA_CACHE", str(tmp_path / "task-cache"))
    monkeypatch.setenv(weights.ENV, f"{s3_server}/weights")
    monkeypatch.setattr(weights, "Hub", NoHub)
    tokenizer_only = loading.load_base_tokenizer(base)
    assert tokenizer_only.eos_token
    folder = loading.resolve(base["source"], base["revision"])
    assert (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
    assert loading.load_model(folder, "gpt2").config.model_type == "gpt2"

    def again(*_):
        raise AssertionError("the mirror was downloaded twice")

    monkeypatch.setattr(weights.storage, "download", again)
    assert loading.resolve(base["source"], base["revision"]) == folder
