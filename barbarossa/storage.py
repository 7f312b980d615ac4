"""Files and folders on a local disk or S3, addressed by one URI string.

Steps pass these URIs to each other instead of weights or datasets, so the same
flow works with a local run folder and with an S3 prefix on a cluster.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def join(root: str, *parts: str) -> str:
    """Join path parts onto a local path or an S3 prefix."""
    if is_s3(root):
        return "/".join([root.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(root, *parts))


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: not an s3://bucket/key URI")
    return bucket, key


def s3_client():
    """A boto3 S3 client that honours a custom endpoint (MinIO, moto, ...)."""
    import boto3

    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    return boto3.client("s3", endpoint_url=endpoint or None)


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
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        key = "/".join([prefix.rstrip("/"), path.relative_to(local_dir).as_posix()])
        client.upload_file(str(path), bucket, key)
    return uri


def local_dir(uri: str, cache_root: Path | None = None) -> Path:
    """A local folder holding what `uri` holds (downloaded once if it is on S3)."""
    if not is_s3(uri):
        return Path(uri)
    bucket, prefix = _split_s3(uri)
    root = Path(cache_root or tempfile.mkdtemp(prefix="barbarossa-")) / bucket / prefix
    client = s3_client()
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix.rstrip("/")) + 1:]
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(dest))
    return root
