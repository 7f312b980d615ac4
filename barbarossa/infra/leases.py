"""GPU memory leases for local runs: the tasks of one machine share its GPUs by memory, not by luck.

Outside a cluster `@resources` does nothing, and Metaflow starts up to 16 tasks at once: without
this, all of them would load onto GPU 0. Each task leases the memory its work item is planned to
need before it loads anything: on the GPU where it fits most tightly (small items pack together,
big GPUs stay free for big items), waiting with a log line while none fits. A lease is a file under
the machine's lease folder, held with an `fcntl` lock for the life of the holder: when the
process ends — also by SIGKILL — the kernel drops the lock and the lease no longer counts.

No starvation: a task waits in arrival order. The oldest waiter that does not fit yet reserves
the GPU it will fit on soonest; younger tasks may still backfill the other GPUs, never that one.

The GPUs are read through NVML (`nvidia-ml-py`), which does not initialise CUDA, and the task's
`CUDA_VISIBLE_DEVICES` is set before anything initialises it; `BARBAROSSA_GPU_BUDGET_GB` tells the
runtime decision its memory budget is the lease, not the whole GPU. `BARBAROSSA_GPU_INVENTORY`
("1x80", "4x24,1x80": count × GB) stands in for NVML, in tests on a CPU or to leave GPUs out.
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
from barbarossa.models.cache import cache_root

INVENTORY_ENV = "BARBAROSSA_GPU_INVENTORY"
BUDGET_ENV = "BARBAROSSA_GPU_BUDGET_GB"
POLL_SECONDS = 0.5


def folder() -> Path:
    """Machine-wide (not per run): two runs on one box share its GPUs too."""
    return cache_root() / "gpu-leases"


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


@dataclass(frozen=True)
class Gpu:
    index: int
    memory_gb: float
    name: str = "GPU"


class LeaseError(RuntimeError):
    """An item that no GPU of this machine can ever hold."""


def parse_inventory(text: str) -> list[Gpu]:
    """`"4x24,1x80"` → four 24 GB GPUs (0-3) and one 80 GB GPU (4)."""
    gpus: list[Gpu] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*(?:GB)?", part, re.I)
        if not match:
            raise ValueError(f"{INVENTORY_ENV}: {part!r} is not <count>x<GB> (e.g. 4x24,1x80)")
        gpus += [Gpu(len(gpus) + i, float(match.group(2)), "simulated") for i in range(int(match.group(1)))]
    return gpus


def inventory() -> list[Gpu]:
    """This machine's GPUs: the simulated inventory when set, else NVML's (none without a driver)."""
    if os.environ.get(INVENTORY_ENV):
        return parse_inventory(os.environ[INVENTORY_ENV])
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no package, no driver, no GPU: nothing to lease
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                Gpu(
                    i,
                    round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 1e9, 1),
                    name.decode() if isinstance(name, bytes) else name,
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _held(path: Path) -> bool:
    """True while some live process holds the file's lock (a dead holder's file is removed)."""
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
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
    """Create `path` with `record`, locked by this process until the handle closes (or the process dies)."""
    handle = open(path, "w")  # noqa: SIM115  (the handle holds the lock: the caller closes it)
    fcntl.flock(handle, fcntl.LOCK_EX)
    handle.write(json.dumps(record))
    handle.flush()
    return handle


def free_memory(gpus: list[Gpu], leases: list[dict]) -> dict[int, float]:
    used = {g.index: 0.0 for g in gpus}
    for lease in leases:
        used[lease["gpu"]] = used.get(lease["gpu"], 0.0) + lease["gb"]
    return {g.index: g.memory_gb - used[g.index] for g in gpus}


def _best_fit(gpus: list[Gpu], free: dict[int, float], gb: float, barred: set[int]) -> int | None:
    options = [g for g in gpus if g.index not in barred and free[g.index] >= gb]
    return min(options, key=lambda g: (free[g.index] - gb, g.index)).index if options else None


def choose(gpus: list[Gpu], leases: list[dict], waiters: list[dict], me: dict) -> int | None:
    """The GPU `me` may lease now, or None. Pure: the whole lease rule, tested without processes.

    Waiters are served in arrival order: each older one that fits takes its best fit first (on paper),
    and each older one that does not fit yet reserves the GPU it will fit on soonest, which nobody
    younger may use. Then `me` takes the best fit among what is left.
    """
    free = free_memory(gpus, leases)
    reserved: set[int] = set()
    for waiter in sorted(waiters, key=lambda w: (w["since"], w["id"])):
        if waiter["id"] == me["id"]:
            break
        index = _best_fit(gpus, free, waiter["gb"], reserved)
        if index is not None:
            free[index] -= waiter["gb"]
            continue
        room = [g for g in gpus if g.memory_gb >= waiter["gb"] and g.index not in reserved]
        if room:
            reserved.add(max(room, key=lambda g: (free[g.index], -g.index)).index)
    return _best_fit(gpus, free, me["gb"], reserved)


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

    Sets CUDA_VISIBLE_DEVICES to the leased GPU and BARBAROSSA_GPU_BUDGET_GB to the lease while the
    block runs: call it before anything initialises CUDA.
    """
    gpus = inventory() if gpus is None else gpus
    if not gpus:
        yield None
        return
    biggest = max(g.memory_gb for g in gpus)
    if gb > biggest:
        raise LeaseError(f"{label}: needs {gb:.1f} GB of GPU memory; this machine's largest GPU has {biggest:.0f} GB")
    folder.mkdir(parents=True, exist_ok=True)
    me = {"id": uuid.uuid4().hex, "gb": gb, "label": label, "pid": os.getpid(), "since": time.time()}
    with open(folder / ".lock", "a") as guard:  # files are created and read only under the folder's lock
        fcntl.flock(guard, fcntl.LOCK_EX)
        ticket = _hold(folder / f"{me['id']}.waiting", me)
    started, said, handle = time.time(), False, None
    try:
        while handle is None:
            with open(folder / ".lock", "a") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                leases, waiters = _live(folder, ".lease"), _live(folder, ".waiting")
                index = choose(gpus, leases, waiters, me)
                if index is not None:
                    record = {**me, "gpu": index, "leased_at": time.time()}
                    handle = _hold(folder / f"{me['id']}.lease", record)
            if handle is None:
                if not said:
                    free = free_memory(gpus, leases)
                    log(
                        f"{label}: waiting for {gb:.1f} GB on a GPU (free now: "
                        + ", ".join(f"GPU {i} {f:.1f} GB" for i, f in free.items())
                        + ")"
                    )
                    said = True
                time.sleep(poll)
        ticket.close()
        (folder / f"{me['id']}.waiting").unlink(missing_ok=True)
        gpu = next(g for g in gpus if g.index == index)
        lease = Lease(gpu, gb, time.time() - started)
        log(
            f"{label}: leased {gb:.1f} GB of GPU {gpu.index} ({gpu.name}, {gpu.memory_gb:.0f} GB)"
            + (f" after waiting {lease.waited_s:.0f} s" if said else "")
        )
        saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", BUDGET_ENV)}
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu.index)
        os.environ[BUDGET_ENV] = f"{gb:.3f}"
        try:
            yield lease
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        if handle is not None:
            handle.close()
            (folder / f"{me['id']}.lease").unlink(missing_ok=True)
        if not ticket.closed:
            ticket.close()
            (folder / f"{me['id']}.waiting").unlink(missing_ok=True)


@contextlib.contextmanager
def for_task(item: dict, plan: dict, infra: dict):
    """The lease a tune task holds while it trains and evaluates: none on a cluster (each task has its own pod
    and GPU), else `gpu_lease` for the item's planned memory."""
    if infra["compute"] != "local":
        yield None
        return
    with gpu_lease(need_gb(item, plan), item["name"], folder()) as lease:
        yield lease
