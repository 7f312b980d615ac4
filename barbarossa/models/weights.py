"""Base-model weights from one place per deployment: a mirror first, the Hugging Face Hub second.

`barbarossa fetch --models SPEC --to ROOT` copies each selected hub base, once,
into `ROOT/<owner>--<name>@<revision>/` (a folder or an `s3://` prefix): only
the files loading needs (`hub_patterns`), and a MANIFEST.json — source,
requested revision, the commit it resolved to, every file and its size —
written last, so a mirror without one is unfinished and never used.

Tasks read `BARBAROSSA_WEIGHTS` (the same ROOT): a base with a complete copy
there loads from it (an S3 copy is downloaded once per machine into the model
cache), so every task of a run gets the same bytes and none needs the hub or a
token. Without a copy they fall back to the hub. Whatever cannot be had raises
`WeightsUnavailable`, one line that says which base and what to do.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from barbarossa import storage
from barbarossa.models import cache

ENV = "BARBAROSSA_WEIGHTS"
MANIFEST = "MANIFEST.json"
# transformers' own weight names: a single file, or shards named by their index.
SAFETENSORS = ("model.safetensors", "model-*-of-*.safetensors")
BIN = ("pytorch_model.bin", "pytorch_model-*-of-*.bin")
CONFIG = ("*.json", "*.model", "*.txt", "*.tiktoken")  # config, generation and tokenizer files
TOKENIZER_PATTERNS = (*CONFIG, "*.py")  # a remote-code tokenizer may need its code
# Used only when the repo's file list can be had neither from the hub nor from the hub cache:
# safetensors weights and small files, never .bin, so a repo with both is not fetched twice.
FALLBACK_PATTERNS = ("*.safetensors", *TOKENIZER_PATTERNS)


class WeightsUnavailable(RuntimeError):
    """A base whose weights can be had neither from the mirror nor from the hub; the message says what to do."""


# --------------------------------------------------------------------------- what to fetch


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _weight_files(top: list[str]) -> list[str]:
    """The weight files (with their index) of one format: safetensors when the repo has them, else .bin."""
    for names in (SAFETENSORS, BIN):
        found = [f for f in top if _matches(f, names)]
        if found:
            index = f"{names[0]}.index.json"
            return found + ([index] if index in top else [])
    return []


def hub_patterns(files: list[str], remote_code: bool = False) -> list[str]:
    """`allow_patterns` for what loading needs from a repo holding `files`, and nothing else.

    Only top-level files (onnx/, original/, ... are other runtimes' copies);
    one weight format (safetensors, else .bin: never both); config, tokenizer and
    generation files; `*.py` only for a remote-code base. Other formats (TF, Flax,
    GGUF, Mistral's consolidated.safetensors) and stray files (training_args.bin)
    are left out. The patterns are the chosen names themselves, escaped, because
    the hub's `*` also matches '/'.
    """
    top = [f for f in files if "/" not in f]
    weights = _weight_files(top)
    small = CONFIG + (("*.py",) if remote_code else ())
    other = [f for f in top if _matches(f, small) and not f.endswith(".index.json")]
    return [glob.escape(f) for f in sorted(set(weights + other))]


# --------------------------------------------------------------------------- errors


def _reason(err: Exception, revision: str | None) -> tuple[str, str]:
    """(what went wrong, what to do) for an error of the hub client."""
    from huggingface_hub import errors

    if isinstance(err, errors.GatedRepoError):
        return "the repo is gated", "accept its licence on the hub and set HF_TOKEN"
    if isinstance(err, errors.RevisionNotFoundError):
        return f"revision {revision!r} does not exist", "check the roster's revision"
    if isinstance(err, errors.RepositoryNotFoundError):
        return "the repo does not exist or is private", "check the source; for a private repo set HF_TOKEN"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        return f"access refused ({status})", "set HF_TOKEN to a token that may read it"
    first = (str(err).strip().split(". ")[0].splitlines() or [""])[0][:160]  # its first sentence, not its story
    return (
        f"the hub did not serve it and the hub cache does not hold it ({type(err).__name__}: {first})",
        "run where the hub is reachable",
    )


def unavailable(base: dict, err: Exception, mirror: str | None = None) -> WeightsUnavailable:
    """One line naming the base, its source and revision, why, and what to do."""
    revision = base.get("revision")
    reason, todo = _reason(err, revision)
    missing = f"the mirror {mirror} holds no complete copy of it; " if mirror else ""
    which = f"{base['name']} ({base['source']}, " if base.get("name") else f"{base['source']} ("
    return WeightsUnavailable(
        f"weights of {which}revision {revision or 'default branch'}) unavailable: {missing}{reason}. "
        f"To fix: {todo}, or set {ENV} to a mirror made with `barbarossa fetch --models ... --to ...`."
    )


def _hub_errors() -> tuple[type[Exception], ...]:
    """What the hub client raises for a failed request (not for bugs): OSError covers its HTTP and offline errors."""
    import httpx2

    return OSError, ValueError, httpx2.HTTPError


# --------------------------------------------------------------------------- the hub


def _repo(base: dict) -> str:
    scheme, _, repo = base["source"].partition(":")
    if scheme != "hf":
        raise ValueError(f"{base['source']}: only hf: sources are fetched; other sources are built locally")
    return repo


class Hub:
    """The Hugging Face Hub, through huggingface_hub. `fetch_base` takes any object with `listing` and `download`."""

    def __init__(self, cache_dir: Path | None = None):
        self.cache_dir = cache_dir or cache.cache_root() / "hub"

    def listing(self, repo: str, revision: str | None) -> tuple[str, list[str]]:
        """(commit sha the revision points at, every file of the repo there)."""
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, revision=revision)
        return info.sha, [s.rfilename for s in info.siblings]

    def cached_files(self, repo: str, revision: str | None) -> list[str] | None:
        """The file list an earlier download left in the hub cache (no network), or None."""
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError

        try:
            return [f.path for f in get_cached_repo_tree(repo, revision=revision, cache_dir=self.cache_dir)]
        except (CachedRepoTreeNotFoundError, OSError, ValueError):
            return None

    def download(self, repo: str, revision: str | None, patterns: list[str]) -> Path:
        """A folder holding (at least) the repo's files matching `patterns` at `revision`."""
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, revision=revision, cache_dir=self.cache_dir, allow_patterns=patterns))


def _patterns(hub: Hub, base: dict, only) -> list[str]:
    """What to download: from the hub's file list, else the hub cache's, else the fallback patterns."""
    repo, revision = _repo(base), base.get("revision") or None
    try:
        files = hub.listing(repo, revision)[1]
    except _hub_errors():  # offline or refused: the download below decides, from the cache or with a clear error
        files = hub.cached_files(repo, revision)
    if files is None:
        return list(only or FALLBACK_PATTERNS)
    return hub_patterns([f for f in files if not only or _matches(f, only)], base.get("remote_code", False))


def hub_folder(base: dict, only=None, mirror: str | None = None) -> Path:
    """A hub base as a local folder (the hub cache): only the files loading needs, or only those matching `only`."""
    hub, repo = Hub(), _repo(base)
    try:
        return hub.download(repo, base.get("revision") or None, _patterns(hub, base, only))
    except _hub_errors() as err:
        raise unavailable(base, err, mirror) from None


def local_folder(base: dict, only=None) -> Path:
    """A hub base as a local folder: from the mirror in BARBAROSSA_WEIGHTS when it has a copy, else from the hub."""
    mirror = os.environ.get(ENV) or None
    folder = mirror_folder(base, mirror, only) if mirror else None
    return folder or hub_folder(base, only, mirror)


# --------------------------------------------------------------------------- the mirror


def mirror_key(base: dict) -> str:
    """A base's folder in a mirror: repo id and requested revision, readable ('EleutherAI--gpt-neo-125m@main')."""
    revision = base.get("revision") or "default"
    return f"{_repo(base).replace('/', '--')}@{revision.replace('/', '--')}"


def read_manifest(where: str) -> dict | None:
    """The MANIFEST.json of a mirrored base, or None while there is none (never fetched, or unfinished)."""
    uri = storage.join(where, MANIFEST)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def _check_sizes(folder: Path, files: list[dict], where: str) -> Path:
    """A copy whose files differ from its manifest is corrupt: say so rather than load it."""
    for entry in files:
        path = folder / entry["name"]
        if not path.is_file() or path.stat().st_size != entry["size"]:
            raise WeightsUnavailable(
                f"mirror {where}: {entry['name']} is missing or not {entry['size']} bytes; "
                f"fetch it again with `barbarossa fetch`"
            )
    return folder


def mirror_folder(base: dict, mirror: str, only=None) -> Path | None:
    """A local folder with the mirror's complete copy of `base`, or None when the mirror has none.

    A local mirror is used in place; an S3 copy is downloaded once per machine
    into the model cache, under a lock (parallel tasks wait for one download).
    `only` (patterns) limits an S3 download to those files, e.g. the tokenizer's.
    """
    where = storage.join(mirror, mirror_key(base))
    manifest = read_manifest(where)
    if manifest is None:
        return None
    files = [f for f in manifest["files"] if not only or _matches(f["name"], only)]
    if not storage.is_s3(where):
        return _check_sizes(Path(where), files, where)

    def download(out: Path) -> None:
        for entry in files:
            storage.download(storage.join(where, entry["name"]), out / entry["name"])
        _check_sizes(out, files, where)

    return cache.cached_folder(f"mirror|{where}|{manifest['commit']}|{','.join(only or ())}", download)


def fetch_base(base: dict, to: str, hub=None) -> str:
    """Mirror one hub base under `to` (folder or s3:// prefix); returns the mirror's URI for it.

    The revision (a branch, tag or sha; default branch when None) is resolved to
    a commit first and the files are taken at that commit, so the manifest says
    exactly what was copied. An earlier manifest is removed before anything is
    written and the new one is written last: a reader never takes a half-copied
    mirror for a complete one. `hub` defaults to the Hugging Face Hub.
    """
    hub = hub or Hub()
    repo, revision = _repo(base), base.get("revision") or None
    try:
        commit, files = hub.listing(repo, revision)
        patterns = hub_patterns(files, base.get("remote_code", False))
        names = [f for f in files if _matches(f, patterns)]
        if not _weight_files(names):
            raise WeightsUnavailable(
                f"{base.get('name') or repo} ({base['source']}): the repo has no transformers "
                f"weights (model*.safetensors or pytorch_model*.bin) at {commit}"
            )
        folder = hub.download(repo, commit, patterns)
    except _hub_errors() as err:
        raise unavailable(base, err) from None
    where = storage.join(to, mirror_key(base))
    storage.delete(storage.join(where, MANIFEST))
    with tempfile.TemporaryDirectory(dir=cache.cache_root()) as staging:
        for name in names:  # links, so upload_dir copies only these files, and copies them once
            os.symlink((folder / name).resolve(), Path(staging, name))
        storage.upload_dir(Path(staging), where)
    manifest = {
        "source": base["source"],
        "revision": revision,
        "commit": commit,
        "files": [{"name": n, "size": (folder / n).stat().st_size} for n in names],
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    storage.write_text(storage.join(where, MANIFEST), json.dumps(manifest, indent=2) + "\n")
    return where
