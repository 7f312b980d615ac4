"""A Docker engine and a local base image for `make image-check`, on a bare Debian machine.

CI starts from a machine with nothing installed and no container registry: Debian's `docker.io`
gives the engine (its `dockerd` is started here and stopped when the check ends), and the base
image is built with `debootstrap` from Debian's packages, once, then reused. The host's CA
certificates go into the base, so `pip` in a build works behind a TLS-inspecting proxy.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DOCKER = "/usr/bin/docker"  # Debian's client: the preinstalled /usr/local/bin/docker has no builder that works here
BASE = "barbarossa-base:bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def docker(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], text=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}, **options)


def install_packages() -> None:
    """docker.io and debootstrap from Debian, when missing (apt-get needs root, as CI runs)."""
    if Path(DOCKER).exists() and shutil.which("dockerd") and shutil.which("debootstrap"):
        return
    command = ["apt-get", "install", "-y", "-q", "docker.io", "debootstrap"]
    if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)


def engine_up() -> bool:
    return docker("info", capture_output=True).returncode == 0


@contextlib.contextmanager
def running_engine(log: Path):
    """A dockerd for the duration of the block: one already running is used and left running."""
    install_packages()
    if engine_up():
        yield
        return
    with open(log, "a") as out:
        daemon = subprocess.Popen([shutil.which("dockerd"), "--storage-driver=overlay2"], stdout=out, stderr=out)
    try:
        deadline = time.time() + 60
        while not engine_up():
            if daemon.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dockerd did not start (exit {daemon.poll()}); its log: {log}")
            time.sleep(0.5)
        yield
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()


def apt_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources")) -> str:
    """The Debian mirror this machine's apt uses (debootstrap fetches from the same place)."""
    if sources.exists():
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.M)
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, capture_output=True).returncode == 0


def build_base(name: str = BASE, say=print) -> str:
    """Debian bookworm (a released Python 3.11, venv, git, CA certificates) as a local image; reused when present."""
    if image_exists(name):
        say(f"base image {name}: present, reused")
        return name
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="barbarossa-base-") as tmp:
        root = Path(tmp) / "root"
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates,git,passwd",
                "bookworm",
                str(root),
                apt_mirror(),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if HOST_CA_BUNDLE.exists():  # the proxy's CA is among the host's certificates
            shutil.copy(HOST_CA_BUNDLE, root / "usr/local/share/ca-certificates/host-bundle.crt")
            subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, stdout=subprocess.DEVNULL)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([DOCKER, "import", "-", name], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap folder failed")
    say(f"base image {name}: built with debootstrap in {time.time() - started:.0f} s")
    return name


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
