"""Local GPU leases: real processes and real fcntl locks on a simulated GPU inventory (no GPU needed)."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
import types

import pytest
from conftest import ROOT

from barbarossa.engine.runtime import HEADROOM
from barbarossa.infra import leases
from barbarossa.planning import calibration

HOLDER = """
import json, os, sys, time
from pathlib import Path
from barbarossa.infra import leases
gb, label, folder, hold, events = float(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
leases.DEFAULT_FOLDER = folder  # the machine's folder, for this test; each holder's cache and home may differ

def signalled(name):  # hold < 0: the test says when to ask and when to give back
    while hold < 0 and not os.path.exists(f"{events}.{label}.{name}"):
        time.sleep(0.01)

def note(**event):
    with open(events, "a") as out:
        out.write(json.dumps({"label": label, **event}) + "\\n")

signalled("ask")
with leases.gpu_lease(gb, label, leases.folder(), poll=0.05) as lease:
    note(gb=gb, gpu=lease.gpu.index, start=time.time(), cuda=os.environ["CUDA_VISIBLE_DEVICES"],
         order=os.environ["CUDA_DEVICE_ORDER"], budget=os.environ["BARBAROSSA_GPU_BUDGET_GB"])
    signalled("done")
    time.sleep(max(hold, 0))
    note(end=time.time())
"""
GATED = -1  # a holder's hold: until the test signals "done"


def holder(tmp_path, gb, label, hold, inventory="1x80", **env):
    """A process that leases `gb`, holds it `hold` seconds (or, GATED, asks and gives back when signalled) and
    logs when it got and gave back the lease."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), leases.INVENTORY_ENV: inventory, **env}
    for key in (leases.FOLDER_ENV, "CUDA_VISIBLE_DEVICES"):
        env.pop(key, None)
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


def signal_holder(tmp_path, label, name):
    (tmp_path / f"events.jsonl.{label}.{name}").touch()


def asking(tmp_path) -> set[str]:
    """Labels with a live record (waiting or leased) in the lease folder."""
    found = set()
    for path in (tmp_path / "leases").glob("*.*"):
        try:
            found.add(json.loads(path.read_text())["label"])
        except (OSError, ValueError, KeyError):
            continue
    return found


def started(tmp_path) -> dict[str, dict]:
    return intervals(tmp_path) if (tmp_path / "events.jsonl").exists() else {}


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


def wait_for(condition, timeout=30, what="timed out"):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.02)


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
        pytest.raises(leases.LeaseError, match="needs 90.0 GB .* largest GPU this run may use has 80 GB"),
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
    assert all(s["order"] == "PCI_BUS_ID" for s in spans)
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
    monkeypatch.setenv(leases.FOLDER_ENV, str(tmp_path / "leases"))
    monkeypatch.setenv(leases.INVENTORY_ENV, "1x80")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    task = {"name": "a", "base": {"name": "b", "resources": {"gpu_memory_gb": 16}}}
    with leases.for_task(task, {"rows": []}, {"compute": "kubernetes"}) as lease:
        assert lease is None
    with leases.for_task(task, {"rows": []}, {"compute": "local"}) as lease:
        assert lease.gb == 16 and lease.gpu.index == 0


def test_the_lease_folder_is_one_per_machine_whatever_the_cache_or_home(tmp_path, monkeypatch):
    monkeypatch.delenv(leases.FOLDER_ENV, raising=False)
    seen = set()
    for who in ("alice", "bob"):
        monkeypatch.setenv("BARBAROSSA_CACHE", str(tmp_path / who / "cache"))
        monkeypatch.setenv("HOME", str(tmp_path / who))
        monkeypatch.setenv("TMPDIR", str(tmp_path / who / "tmp"))
        seen.add(leases.folder())
    assert seen == {leases.DEFAULT_FOLDER}
    monkeypatch.setenv(leases.FOLDER_ENV, str(tmp_path / "moved"))
    assert leases.folder() == tmp_path / "moved"


def test_two_runs_with_their_own_cache_and_home_never_hold_one_gpu_past_its_memory(tmp_path):
    """The reviewer's case: two 70 GB leases on one 80 GB GPU, asked by runs of two caches and homes."""

    def own(who):
        return {"BARBAROSSA_CACHE": str(tmp_path / who / "cache"), "HOME": str(tmp_path / who)}

    alice = holder(tmp_path, 70, "alice", GATED, **own("alice"))
    bob = holder(tmp_path, 70, "bob", GATED, **own("bob"))
    signal_holder(tmp_path, "alice", "ask")
    wait_for(lambda: "alice" in started(tmp_path))
    signal_holder(tmp_path, "bob", "ask")
    wait_for(lambda: "bob" in asking(tmp_path))  # bob has asked, while alice holds
    assert "bob" not in started(tmp_path)
    signal_holder(tmp_path, "alice", "done")
    wait_for(lambda: "bob" in started(tmp_path))
    signal_holder(tmp_path, "bob", "done")
    assert alice.wait(timeout=30) == 0 and bob.wait(timeout=30) == 0
    spans = intervals(tmp_path)
    assert spans["bob"]["start"] >= spans["alice"]["end"]  # written inside the leases: never both at once


def test_a_created_lease_folder_is_shared_by_all_users_and_its_lease_files_readable_by_all(tmp_path):
    before = os.umask(0o077)
    try:
        with leases.gpu_lease(10, "a", tmp_path / "shared", gpus=gpus("1x80")):
            (lease,) = (tmp_path / "shared").glob("*.lease")
            assert stat.S_IMODE(lease.stat().st_mode) == 0o644
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o1777  # world-writable, sticky


def test_a_lease_folder_another_user_made_private_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user who may not write there
    with pytest.raises(
        leases.LeaseError, match=r"not writable by you: its owner can `chmod 1777 .*BARBAROSSA_LEASE_DIR"
    ):
        leases.open_folder(tmp_path)


def test_the_environment_is_put_back_after_a_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.delenv(leases.BUDGET_ENV, raising=False)
    with leases.gpu_lease(30, "a", tmp_path, gpus=gpus("2x80")) as lease:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == str(lease.gpu.index)
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and os.environ[leases.BUDGET_ENV] == "30.000"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "CUDA_DEVICE_ORDER" not in os.environ and leases.BUDGET_ENV not in os.environ
    with pytest.raises(RuntimeError, match="boom"), leases.gpu_lease(30, "b", tmp_path, gpus=gpus("2x80")):
        raise RuntimeError("boom")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1" and "CUDA_DEVICE_ORDER" not in os.environ


def fake_nvml(cards):
    """A `pynvml` module over (GB, UUID) cards in PCI bus order."""
    info = [types.SimpleNamespace(total=gb * 1e9, uuid=card) for gb, card in cards]
    return types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(info),
        nvmlDeviceGetHandleByIndex=lambda i: info[i],
        nvmlDeviceGetName=lambda h: b"NVIDIA Test %d GB" % int(h.total / 1e9),
        nvmlDeviceGetMemoryInfo=lambda h: h,
        nvmlDeviceGetUUID=lambda h: h.uuid,
    )


def test_on_a_mixed_box_nvml_s_card_is_the_one_cuda_gets_and_a_user_s_devices_restrict_the_inventory(
    tmp_path, monkeypatch
):
    cards = [
        (24, "GPU-aaaa-0000"),
        (80, "GPU-bbbb-1111"),
        (24, "GPU-cccc-2222"),
    ]  # PCI order; CUDA's fastest-first differs
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(cards))
    for key in (leases.INVENTORY_ENV, "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", leases.BUDGET_ENV):
        monkeypatch.delenv(key, raising=False)
    box = leases.inventory()
    assert [(g.index, g.memory_gb, g.uuid) for g in box] == [(i, gb, card) for i, (gb, card) in enumerate(cards)]
    assert box[1].name == "NVIDIA Test 80 GB"
    with leases.gpu_lease(70, "big", tmp_path) as lease:
        assert lease.gpu.index == 1
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb-1111" and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")  # the user keeps the 80 GB card for something else
    assert [g.index for g in leases.inventory()] == [0, 2]
    with (
        pytest.raises(leases.LeaseError, match="largest GPU this run may use has 24 GB"),
        leases.gpu_lease(70, "big", tmp_path),
    ):
        pass
    for setting in ("2", "GPU-cccc", "GPU-bbbb-1111,GPU-cccc-2222"):  # best fit: the 24 GB card
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", setting)
        with leases.gpu_lease(20, "small", tmp_path) as lease:
            assert lease.gpu.index == 2 and os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-cccc-2222"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == setting
    for setting, visible in (("", []), ("1,7,0", [1]), ("GPU-", [])):  # CUDA stops at the first entry naming no card
        assert [g.index for g in leases.visible(box, setting)] == visible


def test_real_leases_start_in_the_order_and_on_the_gpus_the_plan_s_simulation_gives(tmp_path):
    """`calibration.schedule` and `gpu_lease` apply one rule. Real holders arrive in the simulation's order; the
    test gives each lease back when the simulation ends it, and each start must fall after as many ends, on the
    same GPU, as simulated."""
    sizes = {"a": (20, 1.0), "b": (50, 4.0), "c": (60, 1.0), "d": (20, 1.0), "e": (10, 0.6)}
    rows = [{"name": n, "gpu_hours": h, "planned_gb": gb * HEADROOM, "mfu": 0.01} for n, (gb, h) in sizes.items()]
    box = gpus("1x24,1x80")
    simulated = calibration.schedule(rows, box, ceiling=1.0)
    ends = sorted(r["end"] for r in simulated)
    expected = {r["name"]: (sum(end <= r["start"] for end in ends), r["gpu"]) for r in simulated}
    assert [r["name"] for r in simulated] == ["a", "b", "d", "e", "c"]  # c waits for the 80 GB card, d and e backfill
    workers = {n: holder(tmp_path, gb, n, GATED, inventory="1x24,1x80") for n, (gb, _) in sizes.items()}
    for name in sizes:  # arrival order: each has asked before the next does
        signal_holder(tmp_path, name, "ask")
        wait_for(lambda name=name: name in asking(tmp_path))
    released = []
    for run in sorted(simulated, key=lambda r: r["end"]):
        due = [n for n, (phase, _) in expected.items() if phase <= len(released)]
        wait_for(lambda due=due: set(due) <= set(started(tmp_path)), what=f"expected {due} to hold a lease by now")
        time.sleep(0.2)  # four polls: room for a start the simulation does not have
        released.append(time.time())
        signal_holder(tmp_path, run["name"], "done")
        wait_for(lambda name=run["name"]: "end" in started(tmp_path).get(name, {}))
    assert all(w.wait(timeout=30) == 0 for w in workers.values())
    real = {n: (sum(t < s["start"] for t in released), s["gpu"]) for n, s in intervals(tmp_path).items()}
    assert real == expected
