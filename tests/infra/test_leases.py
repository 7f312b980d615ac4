"""Local GPU leases: real processes and real fcntl locks on a simulated GPU inventory (no GPU needed)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from barbarossa.infra import leases

HOLDER = """
import json, sys, time
from pathlib import Path
from barbarossa.infra import leases
gb, label, folder, hold, events = float(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
with leases.gpu_lease(gb, label, folder, poll=0.05) as lease:
    import os
    start = time.time()
    with open(events, "a") as out:
        out.write(json.dumps({"label": label, "gb": gb, "gpu": lease.gpu.index, "start": start,
                              "cuda": os.environ["CUDA_VISIBLE_DEVICES"],
                              "budget": os.environ["BARBAROSSA_GPU_BUDGET_GB"]}) + "\\n")
    time.sleep(hold)
    with open(events, "a") as out:
        out.write(json.dumps({"label": label, "end": time.time()}) + "\\n")
"""


def holder(tmp_path, gb, label, hold, inventory="1x80"):
    """A process that leases `gb`, holds it `hold` seconds and logs when it got and gave back the lease."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), leases.INVENTORY_ENV: inventory}
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER,
            str(gb),
            label,
            str(tmp_path / "leases"),
            str(hold),
            str(tmp_path / "events.jsonl"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )


def intervals(tmp_path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for line in (tmp_path / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        found.setdefault(event["label"], {}).update(event)
    return found


def most_at_once(spans) -> tuple[int, float]:
    """The most leases held at one moment, and the most GB held then."""
    points = sorted(
        [(s["start"], 1, s["gb"]) for s in spans] + [(s["end"], -1, -s["gb"]) for s in spans],
        key=lambda p: (p[0], p[1]),
    )
    count = gb = best = best_gb = 0
    for _, step, size in points:
        count, gb = count + step, gb + size
        best, best_gb = max(best, count), max(best_gb, gb)
    return best, best_gb


def wait_for(condition, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def gpus(text):
    return leases.parse_inventory(text)


def entry(name, gb, since, gpu=None):
    return {"id": name, "gb": gb, "since": since, **({"gpu": gpu} if gpu is not None else {})}


def test_the_rule_packs_small_items_by_best_fit_and_keeps_big_gpus_for_big_items():
    box = gpus("1x24,1x80")
    assert [g.memory_gb for g in box] == [24.0, 80.0]
    assert leases.choose(box, [], [], entry("a", 20, 0)) == 0  # the small GPU, leaving the 80 GB one whole
    assert leases.choose(box, [], [], entry("a", 30, 0)) == 1
    assert leases.choose(box, [entry("x", 20, 0, gpu=0), entry("y", 50, 0, gpu=1)], [], entry("a", 20, 1)) == 1
    assert (
        leases.choose(gpus("1x80"), [entry("x", 30, 0, gpu=0), entry("y", 30, 0, gpu=0)], [], entry("a", 30, 1)) is None
    )


def test_an_older_waiter_that_does_not_fit_reserves_its_gpu_against_younger_ones():
    one = gpus("1x80")
    held = [entry("small", 30, 0, gpu=0)]
    big, late = entry("big", 70, 1), entry("late", 30, 2)
    assert leases.choose(one, held, [big, late], late) is None  # 50 GB free, but it belongs to the big item
    two = gpus("2x80")
    held = [entry("s1", 30, 0, gpu=0), entry("s2", 30, 0, gpu=1)]
    assert leases.choose(two, held, [big, late], late) is not None  # one GPU is reserved, the other backfills
    fits = entry("fits", 40, 1)
    assert leases.choose(one, held[:1], [fits, late], late) is None  # an older waiter that fits takes its share first


def test_an_item_no_gpu_can_hold_is_refused_at_once(tmp_path):
    with (
        pytest.raises(leases.LeaseError, match="needs 90.0 GB .* largest GPU has 80 GB"),
        leases.gpu_lease(90, "huge", tmp_path, gpus=gpus("2x80")),
    ):
        pass
    with leases.gpu_lease(90, "cpu-only", tmp_path, gpus=[]) as lease:
        assert lease is None  # no GPUs: nothing to lease, the task runs on the CPU


def test_four_30_gb_items_on_one_80_gb_gpu_run_at_most_two_at_once(tmp_path):
    workers = [holder(tmp_path, 30, f"item{i}", 0.8) for i in range(4)]
    assert all(w.wait(timeout=60) == 0 for w in workers)
    spans = intervals(tmp_path).values()
    assert len(spans) == 4 and all(s["cuda"] == "0" and float(s["budget"]) == 30 for s in spans)
    assert most_at_once(spans)[0] == 2


def test_sixteen_workers_on_a_one_gpu_box_never_oversubscribe_it(tmp_path):
    sizes = [10, 25, 40, 15] * 4
    workers = [holder(tmp_path, gb, f"w{i}", 0.3) for i, gb in enumerate(sizes)]
    assert all(w.wait(timeout=120) == 0 for w in workers)
    spans = list(intervals(tmp_path).values())
    assert len(spans) == 16
    count, gb = most_at_once(spans)
    assert gb <= 80 and count >= 2  # shared, and never more than the GPU holds


def test_a_sigkilled_task_gives_its_lease_back(tmp_path):
    victim = holder(tmp_path, 70, "victim", 60)
    wait_for(lambda: (tmp_path / "events.jsonl").exists())
    successor = holder(tmp_path, 70, "successor", 0)
    time.sleep(0.5)
    assert successor.poll() is None  # it waits: 10 GB free
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert successor.wait(timeout=30) == 0
    assert "successor" in intervals(tmp_path)
    assert not list((tmp_path / "leases").glob("*.lease"))  # nothing left behind once everyone is gone


def test_a_large_item_waiting_behind_small_ones_gets_its_gpu_before_later_small_ones(tmp_path):
    first = holder(tmp_path, 30, "small-first", 1.0)
    wait_for(lambda: (tmp_path / "events.jsonl").exists())
    big = holder(tmp_path, 70, "big", 0.5)
    time.sleep(0.5)  # the big item is waiting now
    later = [holder(tmp_path, 30, f"small-later{i}", 0.5) for i in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in [first, big, *later])
    spans = intervals(tmp_path)
    assert all(spans["big"]["start"] < spans[f"small-later{i}"]["start"] for i in range(4))
    assert spans["big"]["start"] >= spans["small-first"]["end"]


def test_an_item_leases_its_plan_estimate_over_the_runtime_headroom():
    from barbarossa.engine.runtime import HEADROOM

    plan = {
        "rows": [
            {"name": "b-lora-all", "base": "b", "planned_gb": 18.0},
            {"name": "b-lora-attn", "base": "b", "planned_gb": 9.0},
        ]
    }
    base = {"name": "b", "resources": {"gpu_memory_gb": 24}}
    assert leases.need_gb({"name": "b-lora-all", "base": base}, plan) == round(18.0 / HEADROOM, 1)
    assert leases.need_gb({"name": "b", "base": base}, plan) == round(
        9.0 / HEADROOM, 1
    )  # evaluation only: the smallest
    assert leases.need_gb({"name": "c", "base": {"name": "c", "resources": {"gpu_memory_gb": 16}}}, plan) == 16


def test_a_cluster_task_leases_nothing_and_a_local_one_its_item_s_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("BARBAROSSA_CACHE", str(tmp_path))
    monkeypatch.setenv(leases.INVENTORY_ENV, "1x80")
    task = {"name": "a", "base": {"name": "b", "resources": {"gpu_memory_gb": 16}}}
    with leases.for_task(task, {"rows": []}, {"compute": "kubernetes"}) as lease:
        assert lease is None
    with leases.for_task(task, {"rows": []}, {"compute": "local"}) as lease:
        assert lease.gb == 16 and lease.gpu.index == 0
