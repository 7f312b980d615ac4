"""Files and folders on a local disk or S3, addressed by one URI string.

Steps pass these URIs to each other instead of weights or datasets, so the same
flow works with a local run folder and with an S3 prefix on a cluster.

Storage on a cluster fails now and then (throttling, 500/503, dropped
connections), so every S3 request is retried with exponential back-off and
jitter (botocore's "standard" mode, MAX_ATTEMPTS tries); each request that
needed retries says so on stderr, where the task log keeps it. Nothing a reader
opens is ever half written: a file is one PUT (or a rename on disk), and a
folder on S3 is complete only once its manifest (`.manifest.json`: every
file's size and sha256), uploaded last, is there — `local_dir` checks it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

MAX_ATTEMPTS = 10  # per request: ~1 min of back-off in all at botocore's 20 s cap, enough for a throttling burst
MANIFEST = ".manifest.json"


class IncompleteUpload(RuntimeError):
    """A folder on S3 without its manifest, or with a file whose size or hash differs from it."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(root: str, *parts: str) -> str:
    """Join path parts onto a local path or an S3 prefix."""
    if is_s3(root):
        return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(root, *parts))


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: not an s3://bucket/key URI")
    return bucket, key


def s3_client():
    """A boto3 S3 client that honours a custom endpoint (MinIO, moto, ...) and retries with back-off.

    One per process and endpoint (clients are thread-safe and slow to build).
    """
    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    return _client(endpoint or None)


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None):
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}, connect_timeout=10, read_timeout=60)
    client = boto3.client("s3", endpoint_url=endpoint, config=config)
    client.meta.events.register("after-call.s3", _report_retries)
    return client


def _report_retries(parsed=None, model=None, context=None, **_) -> None:
    """One stderr line per request that succeeded only after retries (what `grep 'S3 retried'` counts in a log)."""
    retries = ((parsed or {}).get("ResponseMetadata") or {}).get("RetryAttempts") or 0
    if retries:
        params = (context or {}).get("input_params") or {}
        key = params.get("Key") or params.get("Prefix") or params.get("Bucket", "")
        print(
            f"S3 retried: {model.name if model else 'request'} {key} succeeded after {retries} "
            f"{'retry' if retries == 1 else 'retries'}",
            file=sys.stderr,
            flush=True,
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes(uri: str, data: bytes) -> str:
    """Write a file whole: a reader never sees a half-written file."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return uri
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return uri


def write_text(uri: str, text: str) -> str:
    return write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return Path(uri).read_bytes()


def read_if_present(uri: str) -> bytes | None:
    """A file's or object's bytes; None where there is none (a cache miss, not an error)."""
    if not is_s3(uri):
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            return None
    from botocore.exceptions import ClientError

    try:
        return read_bytes(uri)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def exists(uri: str) -> bool:
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        listing = s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(obj["Key"] == key for obj in listing.get("Contents", []))
    return Path(uri).is_file()


def delete(uri: str) -> None:
    """Remove one file or object (missing is fine)."""
    if is_s3(uri):
        bucket, key = _split_s3(uri)
        s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).unlink(missing_ok=True)


def download(uri: str, dest: Path) -> Path:
    """Copy one S3 object to a local file (used to parse remote data files)."""
    bucket, key = _split_s3(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    s3_client().download_file(bucket, key, str(dest))
    return dest


def upload_dir(local_dir: Path, uri: str) -> str:
    """Publish a local folder (an adapter, say) under a local path or S3 prefix."""
    local_dir = Path(local_dir)
    if not is_s3(uri):
        import shutil

        target = Path(uri)
        if target.resolve() != local_dir.resolve():
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(local_dir, tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        return uri
    bucket, prefix = _split_s3(uri)
    client = s3_client()
    manifest = {}
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file() and p.name != MANIFEST):
        name = path.relative_to(local_dir).as_posix()
        client.upload_file(str(path), bucket, "/".join([prefix.rstrip("/"), name]))
        manifest[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    write_text(join(uri, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))  # last: the folder is complete
    return uri


def local_dir(uri: str, cache_root: Path | None = None) -> Path:
    """A local folder holding what `uri` holds (downloaded once if it is on S3)."""
    if not is_s3(uri):
        return Path(uri)
    bucket, prefix = _split_s3(uri)
    root = Path(cache_root or tempfile.mkdtemp(prefix="barbarossa-")) / bucket / prefix
    try:
        manifest = json.loads(read_bytes(join(uri, MANIFEST)))
    except Exception as error:
        raise IncompleteUpload(
            f"{uri}: no readable {MANIFEST} — the upload never finished, or predates manifests ({error})"
        ) from error
    client = s3_client()
    for name, expected in sorted(manifest.items()):
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, "/".join([prefix.rstrip("/"), name]), str(dest))
        if dest.stat().st_size != expected["size"] or sha256_file(dest) != expected["sha256"]:
            raise IncompleteUpload(
                f"{uri}/{name}: {dest.stat().st_size} bytes, sha256 differs from the manifest's "
                f"{expected['size']} bytes — a damaged or partial upload"
            )
    return root
