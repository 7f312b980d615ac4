"""The one rule by which tasks get GPU memory, for real and on paper.

The local leases (`infra/leases.py`) apply `choose` to the tasks of a machine; the plan's wall-clock
(`calibration.wall_clock`) replays the same rule over the roster. One function, so that the hours the
plan prints follow the order in which a machine really serves its tasks.

The rule: tasks are served in arrival order. Each older waiter that fits takes its best fit first (on
paper); each older waiter that does not fit yet reserves the GPU it will fit on soonest, which nobody
younger may use. Then the task asking takes the best fit (the GPU it leaves least free) among the rest:
small items pack together and big GPUs stay free for big items, and no stream of small items starves a
big one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    """One physical GPU: `index` in PCI bus order (NVML's), `uuid` as NVML and CUDA name it ("" when simulated)."""

    index: int
    memory_gb: float
    name: str = "GPU"
    uuid: str = ""


def free_memory(gpus: list[Gpu], leases: list[dict]) -> dict[int, float]:
    """GB left on each GPU once `leases` ({"gpu": index, "gb": size}) are held."""
    used = {g.index: 0.0 for g in gpus}
    for lease in leases:
        used[lease["gpu"]] = used.get(lease["gpu"], 0.0) + lease["gb"]
    return {g.index: g.memory_gb - used[g.index] for g in gpus}


def _usable(gpus: list[Gpu], task: dict, barred: set[int]) -> list[Gpu]:
    """The GPUs `task` may use: not reserved by an older waiter, and among its own when it names them ("gpus")."""
    allowed = task.get("gpus")
    return [g for g in gpus if g.index not in barred and (allowed is None or g.index in allowed)]


def _best_fit(gpus: list[Gpu], free: dict[int, float], task: dict, barred: set[int]) -> int | None:
    options = [g for g in _usable(gpus, task, barred) if free[g.index] >= task["gb"]]
    return min(options, key=lambda g: (free[g.index] - task["gb"], g.index)).index if options else None


def choose(gpus: list[Gpu], leases: list[dict], waiters: list[dict], me: dict) -> int | None:
    """The GPU `me` may lease now, or None. Pure: the whole rule, tested without processes.

    `leases` are held ({"gpu", "gb"}); `waiters` ask ({"id", "gb", "since"}, optionally "gpus": the indices
    a task may use), `me` among them or not yet.
    """
    free = free_memory(gpus, leases)
    reserved: set[int] = set()
    for waiter in sorted(waiters, key=lambda w: (w["since"], w["id"])):
        if waiter["id"] == me["id"]:
            break
        index = _best_fit(gpus, free, waiter, reserved)
        if index is not None:
            free[index] -= waiter["gb"]
            continue
        room = [g for g in _usable(gpus, waiter, reserved) if g.memory_gb >= waiter["gb"]]
        if room:
            reserved.add(max(room, key=lambda g: (free[g.index], -g.index)).index)
    return _best_fit(gpus, free, me, reserved)
