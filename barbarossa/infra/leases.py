"""GPU memory leases for local runs: the tasks of one machine share its GPUs by memory, not by luck.

Outside a cluster `@resources` does nothing, and Metaflow starts up to 16 tasks at once: without
this, all of them would load onto GPU 0. Each task leases the memory its work item is planned to
need before it loads anything, by the rule of `planning/scheduling.py` (the one the plan's
wall-clock replays): on the GPU where it fits most tightly, in arrival order, the oldest waiter that
does not fit yet reserving the GPU it will fit on soonest; waiting with a log line while none fits.

A lease is a file in the machine's lease folder, held with an `fcntl` lock for the life of the
holder: when the process ends — also by SIGKILL — the kernel drops the lock and the lease no longer
counts. The folder is one per machine, whatever the cache or home folder, so that runs of other
checkouts and other users count too: `/tmp/barbarossa-gpu-leases` (created world-writable with the
sticky bit, lease files readable by all), or `BARBAROSSA_LEASE_DIR`, which every run sharing the
GPUs must then name alike. Its users are trusted: a lease file deleted by hand stops counting.

The GPUs are read through NVML (`nvidia-ml-py`), which does not initialise CUDA, in PCI bus order;
a `CUDA_VISIBLE_DEVICES` set before the run (PCI-order indices or `GPU-` UUIDs) keeps the others out.
While the lease lasts, `CUDA_VISIBLE_DEVICES` names the leased card (its UUID; simulated ones by
index) with `CUDA_DEVICE_ORDER=PCI_BUS_ID`, set before anything initialises CUDA, and
`BARBAROSSA_GPU_BUDGET_GB` tells the runtime decision and the evaluation that their memory is the
lease, not the whole GPU; all three are put back afterwards. `BARBAROSSA_GPU_INVENTORY` ("1x80",
"4x24,1x80": count × GB) stands in for NVML, in tests on a CPU or to leave GPUs out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from barbarossa.console import log
from barbarossa.engine.runtime import HEADROOM
from barbarossa.infra.deploy import environment
from barbarossa.planning.scheduling import Gpu, choose, free_memory

INVENTORY_ENV = "BARBAROSSA_GPU_INVENTORY"
BUDGET_ENV = "BARBAROSSA_GPU_BUDGET_GB"
FOLDER_ENV = "BARBAROSSA_LEASE_DIR"
DEFAULT_FOLDER = Path("/tmp/barbarossa-gpu-leases")  # fixed: not per user, per cache or per temporary folder
POLL_SECONDS = 0.5


def folder() -> Path:
    """Machine-wide (not per run, cache or user): every run on a box shares its GPUs."""
    return Path(os.environ.get(FOLDER_ENV) or DEFAULT_FOLDER)


def open_folder(path: Path) -> Path:
    """The lease folder, ready to write: made world-writable with the sticky bit when this process creates it
    (others then add leases, and remove only their own); one another user made without that is refused with
    what to do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
        os.chmod(path, 0o1777)  # mkdir's mode passes through the umask
    if not path.is_dir():
        raise LeaseError(f"GPU lease folder {path} is not a folder; set {FOLDER_ENV} to another path")
    if not os.access(path, os.W_OK | os.X_OK):
        info = path.stat()
        raise LeaseError(
            f"GPU lease folder {path} (owner uid {info.st_uid}, mode {info.st_mode & 0o7777:o}) is not writable by "
            f"you: its owner can `chmod 1777 {path}`, or set {FOLDER_ENV} to a folder that every user of this "
            "machine's GPUs can write"
        )
    return path


def need_gb(item: dict, plan: dict) -> float:
    """What to lease for a work item: the plan's estimate for it, over the runtime's headroom (so the runtime
    decision, which fills at most HEADROOM of its budget, decides as the plan did). An untuned base only
    evaluates: its smallest candidate's estimate; alone, its roster entry's declared GPU memory."""
    planned = {row["name"]: row["planned_gb"] for row in plan.get("rows", [])}
    if item["name"] in planned:
        return round(planned[item["name"]] / HEADROOM, 1)
    siblings = [row["planned_gb"] for row in plan.get("rows", []) if row.get("base") == item["base"]["name"]]
    if siblings:
        return round(min(siblings) / HEADROOM, 1)
    return float(item["base"]["resources"]["gpu_memory_gb"])


class LeaseError(RuntimeError):
    """An item that no GPU of this machine can ever hold, or a lease folder this process cannot use."""


def parse_inventory(text: str) -> list[Gpu]:
    """`"4x24,1x80"` → four 24 GB GPUs (0-3) and one 80 GB GPU (4)."""
    gpus: list[Gpu] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*(?:GB)?", part, re.I)
        if not match:
            raise ValueError(f"{INVENTORY_ENV}: {part!r} is not <count>x<GB> (e.g. 4x24,1x80)")
        gpus += [Gpu(len(gpus) + i, float(match.group(2)), "simulated") for i in range(int(match.group(1)))]
    return gpus


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def nvml_gpus() -> list[Gpu]:
    """The GPUs NVML sees, by NVML index (PCI bus order, whatever CUDA_VISIBLE_DEVICES says); none without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no GPU: nothing to lease
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            total = round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 1e9, 1)
            name, card = _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlDeviceGetUUID(handle))
            gpus.append(Gpu(i, total, name, card))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def visible(gpus: list[Gpu], setting: str | None) -> list[Gpu]:
    """The GPUs a `CUDA_VISIBLE_DEVICES` value lets this run use: all when unset; else those it names, by PCI-order
    index or by UUID (or a UUID's unique prefix), up to the first entry that names none (as CUDA reads it)."""
    if setting is None:
        return gpus
    chosen: list[Gpu] = []
    for entry in (e.strip() for e in setting.split(",")):
        found = [
            g for g in gpus if (entry.isdigit() and g.index == int(entry)) or (g.uuid and g.uuid.startswith(entry))
        ]
        if not entry or len(found) != 1:
            break
        chosen += [g for g in found if g not in chosen]
    return chosen


def inventory() -> list[Gpu]:
    """The GPUs this run may lease: the simulated inventory when set, else NVML's, less those a
    `CUDA_VISIBLE_DEVICES` set before the run leaves out."""
    gpus = parse_inventory(os.environ[INVENTORY_ENV]) if os.environ.get(INVENTORY_ENV) else nvml_gpus()
    return visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _held(path: Path) -> bool:
    """True while some live process holds the file's lock (a dead holder's file is removed when we may)."""
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    with contextlib.suppress(PermissionError):  # another user's, in a sticky folder: it stays, and does not count
        path.unlink(missing_ok=True)
    return False


def _live(folder: Path, suffix: str) -> list[dict]:
    entries = []
    for path in sorted(folder.glob(f"*{suffix}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # being written right now (its writer holds the folder lock, we do too) or gone
            continue
        if _held(path):
            entries.append(record)
    return entries


def _hold(path: Path, record: dict):
    """Create `path` with `record`, readable by every user, locked by this process until the handle closes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.fchmod(fd, 0o644)  # whatever the umask: other users' runs must read it
    handle = os.fdopen(fd, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    handle.write(json.dumps(record))
    handle.flush()
    return handle


@contextlib.contextmanager
def _guard(folder: Path):
    """The folder's lock: lease files are created and read only under it (read-only, so any user may take it)."""
    path = folder / ".lock"
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Lease:
    gpu: Gpu
    gb: float
    waited_s: float

    def as_dict(self) -> dict:
        return {
            "gpu": self.gpu.index,
            "gpu_name": self.gpu.name,
            "gpu_memory_gb": self.gpu.memory_gb,
            "lease_gb": self.gb,
            "waited_s": round(self.waited_s, 1),
        }


@contextlib.contextmanager
def gpu_lease(gb: float, label: str, folder: Path, gpus: list[Gpu] | None = None, poll: float = POLL_SECONDS):
    """Hold `gb` of one GPU's memory for the block (yields a Lease; None on a machine without GPUs).

    Sets CUDA_VISIBLE_DEVICES (with CUDA_DEVICE_ORDER=PCI_BUS_ID) to the leased GPU and
    BARBAROSSA_GPU_BUDGET_GB to the lease while the block runs, and puts back what was there after:
    call it before anything initialises CUDA.
    """
    gpus = inventory() if gpus is None else gpus
    if not gpus:
        yield None
        return
    biggest = max(g.memory_gb for g in gpus)
    if gb > biggest:
        raise LeaseError(
            f"{label}: needs {gb:.1f} GB of GPU memory; the largest GPU this run may use has {biggest:.0f} GB"
        )
    folder = open_folder(folder)
    me = {"id": uuid.uuid4().hex, "gb": gb, "label": label, "pid": os.getpid(), "since": time.time()}
    me["gpus"] = [g.index for g in gpus]  # others' choices keep this waiter on the GPUs it may use
    with _guard(folder):
        ticket = _hold(folder / f"{me['id']}.waiting", me)
    started, handle = time.time(), None
    try:
        index, handle, said = _wait_for_gpu(folder, gpus, me, poll)
        ticket.close()
        (folder / f"{me['id']}.waiting").unlink(missing_ok=True)
        gpu = next(g for g in gpus if g.index == index)
        lease = Lease(gpu, gb, time.time() - started)
        log(
            f"{label}: leased {gb:.1f} GB of GPU {gpu.index} ({gpu.name}, {gpu.memory_gb:.0f} GB)"
            + (f" after waiting {lease.waited_s:.0f} s" if said else "")
        )
        with leased_environment(gpu, gb):
            yield lease
    finally:
        if handle is not None:
            handle.close()
            (folder / f"{me['id']}.lease").unlink(missing_ok=True)
        if not ticket.closed:
            ticket.close()
            (folder / f"{me['id']}.waiting").unlink(missing_ok=True)


def _wait_for_gpu(folder: Path, gpus: list[Gpu], me: dict, poll: float):
    """Poll `choose` under the folder's lock until it gives `me` a GPU: (its index, the held lease file, whether
    this task had to wait)."""
    said = False
    while True:
        with _guard(folder):
            leases, waiters = _live(folder, ".lease"), _live(folder, ".waiting")
            index = choose(gpus, leases, waiters, me)
            if index is not None:
                return index, _hold(folder / f"{me['id']}.lease", {**me, "gpu": index, "leased_at": time.time()}), said
        if not said:
            free = free_memory(gpus, leases)
            log(
                f"{me['label']}: waiting for {me['gb']:.1f} GB on a GPU (free now: "
                + ", ".join(f"GPU {i} {f:.1f} GB" for i, f in free.items())
                + ")"
            )
            said = True
        time.sleep(poll)


@contextlib.contextmanager
def leased_environment(gpu: Gpu, gb: float):
    """CUDA sees only `gpu` and the runtime's budget is `gb` in the block; the previous values (or their absence)
    come back after. CUDA's default order is fastest first, not NVML's PCI order: the order is set, and a real
    card is named by UUID, so the index of a simulated one and the UUID of a real one both select that card."""
    cuda = {"CUDA_VISIBLE_DEVICES": gpu.uuid or str(gpu.index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    with environment({**cuda, BUDGET_ENV: f"{gb:.3f}"}):
        yield


@contextlib.contextmanager
def for_task(item: dict, plan: dict, infra: dict):
    """The lease a tune task holds while it trains and evaluates: none on a cluster (each task has its own pod
    and GPU), else `gpu_lease` for the item's planned memory."""
    if infra["compute"] != "local":
        yield None
        return
    with gpu_lease(need_gb(item, plan), item["name"], folder()) as lease:
        yield lease
