"""The machine-local model cache: converted and mirrored model folders, each built once per machine.

A file lock per folder keeps parallel foreach tasks from building the same one twice; a folder
appears only complete (built beside it, then renamed into place).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    root = Path(os.environ.get("BARBAROSSA_CACHE", Path.home() / ".cache" / "barbarossa"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_folder(key: str, build) -> Path:
    """Folder for `key`, built by `build(tmp_dir)` the first time only."""
    target = cache_root() / "models" / hashlib.sha256(key.encode()).hexdigest()[:20]
    with locked(target):
        if not (target / "config.json").exists():
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            build(tmp)
            (tmp / "SOURCE").write_text(key + "\n")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    return target
