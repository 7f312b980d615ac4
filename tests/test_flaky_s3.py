"""Storage on an S3 endpoint that fails requests: retried with back-off, nothing lost, nothing half read."""

import os

import numpy as np
import pytest
import torch
from conftest import moto_s3, own_metaflow_root
from flaky_s3 import FlakyS3, pid_of_client

from barbarossa import storage

pytestmark = pytest.mark.server


@pytest.fixture
def flaky(monkeypatch):
    """(bucket, proxy, upstream endpoint): storage talks to moto through a proxy failing 30 % of requests."""
    with moto_s3(monkeypatch) as bucket:
        upstream = os.environ["METAFLOW_S3_ENDPOINT_URL"]
        with FlakyS3(upstream, failure_rate=0.3, seed=1) as proxy:
            monkeypatch.setenv("METAFLOW_S3_ENDPOINT_URL", proxy.url)
            yield bucket, proxy, upstream


def test_files_and_folders_survive_a_storage_that_fails_a_third_of_requests(flaky, tmp_path, capfd):
    bucket, proxy, _ = flaky
    rng = np.random.default_rng(0)
    written = {f"{bucket}/files/{i}.bin": rng.bytes(int(rng.integers(0, 300_000))) for i in range(12)}
    for uri, blob in written.items():
        storage.write_bytes(uri, blob)
    assert all(storage.read_bytes(uri) == blob for uri, blob in written.items())
    folder = tmp_path / "adapter"
    (folder / "sub").mkdir(parents=True)
    files = {"adapter_model.safetensors": rng.bytes(1_500_000), "adapter_config.json": b"{}", "sub/x.txt": b"x"}
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    uri = storage.upload_dir(folder, f"{bucket}/runs/adapter")
    back = storage.local_dir(uri, tmp_path / "back")
    assert {p.relative_to(back).as_posix(): p.read_bytes() for p in back.rglob("*") if p.is_file()} == files

    assert proxy.counts["requests"] > 40 and proxy.failed / proxy.counts["requests"] >= 0.2
    assert min(proxy.counts[fault] for fault in ("500", "503", "drop")) > 0  # every kind of fault was met
    retried = [line for line in capfd.readouterr().err.splitlines() if line.startswith("S3 retried: ")]
    assert retried and sum(int(line.split(" after ")[1].split()[0]) for line in retried) >= proxy.failed // 2


def test_a_folder_without_its_manifest_or_with_a_damaged_file_is_refused(flaky, tmp_path):
    import boto3

    bucket, _, upstream = flaky
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w" * 1000)
    uri = storage.upload_dir(folder, f"{bucket}/bundle")
    direct = boto3.client("s3", endpoint_url=upstream)  # what a crash or a bad copy leaves, without the proxy
    name = bucket.removeprefix("s3://")
    direct.put_object(Bucket=name, Key="bundle/weights.bin", Body=b"w" * 999)
    with pytest.raises(storage.IncompleteUpload, match=r"bundle/weights.bin: 999 bytes.*manifest's 1000 bytes"):
        storage.local_dir(uri, tmp_path / "a")
    direct.delete_object(Bucket=name, Key=f"bundle/{storage.MANIFEST}")
    with pytest.raises(storage.IncompleteUpload, match=r"no readable \.manifest\.json — the upload never finished"):
        storage.local_dir(uri, tmp_path / "b")


ROSTER = """
# A LoRA with dropout on: resuming has to restore the RNG to give the same adapter.
[[base]]
name = "tiny-llama"
source = "tiny:llama"
family = "llama"
certainty = "confirmed"
licence = "none"
params = "0.2M"

[[candidate]]
name = "dropout-llama-lora"
base = "tiny-llama"
lora = { r = 8, alpha = 16, dropout = 0.1, targets = "attention" }
"""
READ_BACK = """
import json, sys
from metaflow import Run
out = {}
for pathspec in sys.argv[2:]:
    run = Run(pathspec)
    tunes = [task for task in run["tune_small"]]
    out[run.id] = {"successful": run.successful, "leaderboard": run.data.leaderboard, "released": run.data.released,
                   "run_root": run.data.run_root, "finished_at": run.finished_at.timestamp(),
                   "join_started": run["join"].task.created_at.timestamp(),
                   "tunes": {t.data.item["name"]: {"attempt": t.current_attempt, "train": t.data.train,
                                                   "log": t.stderr + t.stdout} for t in tunes}}
json.dump(out, open(sys.argv[1], "w"))
"""


class KillOnSecondCheckpoint:
    """Proxy hook: the first time a task writes its second checkpoint, SIGKILL that task and drop the write.

    The process killed is the one holding the connection of that PUT (found
    through /proc): blocked in it, it cannot finish before the kill, and its
    first checkpoint is complete in storage.
    """

    def __init__(self):
        self.killed = None

    def __call__(self, method: str, path: str, client_port: int):
        import signal
        from pathlib import Path

        if self.killed or method != "PUT" or not path.split("?")[0].endswith("/checkpoints/step-000004.pt"):
            return None
        run_id = path.split("/FinetuneFlow/")[1].split("/")[0]
        pid = pid_of_client(client_port)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid else []
        assert b"tune_small" in argv and run_id.encode() in argv, (pid, argv)  # that run's fine-tune task
        os.kill(pid, signal.SIGKILL)
        self.killed = run_id
        return "drop"


@pytest.mark.flow
def test_two_runs_on_a_flaky_s3_one_killed_mid_training_lose_nothing(monkeypatch, tmp_path):
    """Two runs at once on one output root, Metaflow datastore and outputs on an S3 failing ≥ 10 % of requests.

    One run's fine-tune process is SIGKILLed while writing its second
    checkpoint; Metaflow's @retry resumes it from the first (on S3), and its
    adapter equals the other run's uninterrupted one. Afterwards every
    adapter, checkpoint and bundle is checked against the sizes and hashes
    recorded when it was written, straight from the server. With
    must_beat_last_release on, a run may only compare with the other once that
    one has finished (then the same model again is held); otherwise it has no
    earlier release and releases.
    """
    import hashlib
    import json
    import subprocess
    import sys

    import boto3
    from conftest import ROOT
    from safetensors.torch import load

    rosters = tmp_path / "rosters"
    rosters.mkdir()
    (rosters / "dropout.toml").write_text(ROSTER)
    profile = tmp_path / "smoke-must-beat.toml"  # the smoke profile, with the last-release check on
    smoke = (ROOT / "configs" / "profiles" / "smoke.toml").read_text()
    profile.write_text(smoke.replace("must_beat_last_release = false", "must_beat_last_release = true", 1))
    assert profile.read_text() != smoke
    with moto_s3(monkeypatch) as bucket:
        upstream = os.environ["METAFLOW_S3_ENDPOINT_URL"]
        hook = KillOnSecondCheckpoint()
        with FlakyS3(upstream, failure_rate=0.15, seed=3, on_request=hook) as proxy:
            env = {
                **os.environ,
                **own_metaflow_root(tmp_path),
                "METAFLOW_S3_ENDPOINT_URL": proxy.url,
                "BARBAROSSA_ROSTERS": str(rosters),
                "METAFLOW_DATASTORE_SYSROOT_S3": f"{bucket}/metaflow",
                "METAFLOW_RUN_MAX_WORKERS": "2",
            }
            infra = json.dumps({"compute": "local", "models": "dropout", "large_from_gpu_memory_gb": 40})
            runs = []
            for name in ("a", "b"):
                command = [
                    sys.executable,
                    str(ROOT / "flows" / "finetune_flow.py"),
                    "--quiet",
                    "--datastore",
                    "s3",
                    "--config-value",
                    "infra",
                    infra,
                    "run",
                    "--profile",
                    str(profile),
                    "--max-steps",
                    "6",
                    "--output-root",
                    f"{bucket}/runs",
                    "--release-to",
                    f"{bucket}/published/{name}",
                    "--publish",
                    "True",
                    "--merge",
                    "True",
                    "--run-id-file",
                    str(tmp_path / f"{name}.id"),
                ]
                log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115  (closed once its run ends, below)
                process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
                runs.append((process, log))
            for process, log in runs:
                process.wait(timeout=900)
                log.close()
            logs = {name: (tmp_path / f"{name}.log").read_text()[-3000:] for name in ("a", "b")}
            assert [p.returncode for p, _ in runs] == [0, 0], logs
            ids = [(tmp_path / f"{name}.id").read_text().strip() for name in ("a", "b")]
            dump = tmp_path / "back.json"
            done = subprocess.run(
                [sys.executable, "-c", READ_BACK, str(dump), *(f"FinetuneFlow/{i}" for i in ids)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
            assert done.returncode == 0, done.stderr[-3000:]
        stored = stored_objects(boto3.client("s3", endpoint_url=upstream), bucket.removeprefix("s3://"))

    assert proxy.counts["requests"] > 200 and proxy.failed / proxy.counts["requests"] >= 0.10, proxy.counts
    back = json.loads(dump.read_text())
    assert hook.killed in ids
    killed, other = back[hook.killed], back[next(i for i in ids if i != hook.killed)]
    resumed, straight = killed["tunes"]["dropout-llama-lora"], other["tunes"]["dropout-llama-lora"]
    assert resumed["attempt"] == 1 and straight["attempt"] == 0  # Metaflow's @retry ran the killed task again
    assert resumed["train"]["resumed_from_step"] == 2 and straight["train"]["resumed_from_step"] == 0
    assert [p["loss"] for p in resumed["train"]["loss_curve"]] == pytest.approx(
        [p["loss"] for p in straight["train"]["loss_curve"]], abs=1e-5
    )
    adapters = [
        load(stored[key(run["run_root"] + "/dropout-llama-lora/adapter/adapter_model.safetensors")])
        for run in (killed, other)
    ]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.allclose(adapters[0][k], adapters[1][k], atol=1e-5) for k in adapters[0])

    releasing = set()
    for run_id, run in back.items():  # two runs on one output root, each in its own folder
        assert run["successful"] and {r["name"] for r in run["leaderboard"]} == {"tiny-llama", "dropout-llama-lora"}
        assert all(r["status"] == "ok" for r in run["leaderboard"])
        assert run["run_root"] == f"{bucket}/runs/FinetuneFlow/{run_id}"
        row = next(r for r in run["leaderboard"] if r["kind"] == "candidate")
        assert all(row[k].startswith(run["run_root"] + "/") for k in ("adapter_uri", "per_row_uri"))
        other_id = next(i for i in ids if i != run_id)
        if f"(run {other_id})" in row["reasons"][-1]:  # the other run released the same model: it had finished
            assert back[other_id]["finished_at"] < run["join_started"]
            assert row["decision"] == "hold" and row["reasons"][-1].startswith("does not clearly beat the release of")
        else:
            assert row["reasons"][-1] == "no earlier release of this model ✓" and row["decision"] == "release"
            releasing.add(run_id)
        assert [b["name"] for b in run["released"]] == (["dropout-llama-lora"] if run_id in releasing else [])
    assert releasing  # the first run to reach `join` released it
    roots = {k.split("/")[2] for k in stored if k.startswith("runs/FinetuneFlow/")}
    assert roots == set(ids)

    folders = [k[: -len(storage.MANIFEST)] for k in stored if k.endswith("/" + storage.MANIFEST)]
    assert {f for f in folders if f.endswith("/adapter/")} == {
        key(run["run_root"] + "/dropout-llama-lora/adapter/") for run in back.values()
    }
    published = {name for name, run_id in zip("ab", ids) if run_id in releasing}
    assert {f for f in folders if f.startswith("published/")} == {
        f"published/{n}/dropout-llama-lora/" for n in published
    }
    for folder in folders:  # every adapter and bundle: each file as big as, and hashing to, what was written
        manifest = json.loads(stored[folder + storage.MANIFEST])
        assert manifest and all(
            len(stored[folder + name]) == entry["size"]
            and hashlib.sha256(stored[folder + name]).hexdigest() == entry["sha256"]
            for name, entry in manifest.items()
        ), folder
    markers = [k for k in stored if k.endswith("/checkpoints/latest.json")]
    assert len(markers) == 2
    for marker in markers:  # every checkpoint the markers name is there, whole
        for entry in checkpoint_entries(json.loads(stored[marker])):
            blob = stored[key(entry["uri"])]
            assert len(blob) == entry["size"] and hashlib.sha256(blob).hexdigest() == entry["sha256"]
    retried = sum(t["log"].count("S3 retried: ") for run in back.values() for t in run["tunes"].values())
    assert retried > 0, "no task log counted a retried S3 request"


def key(uri: str) -> str:
    """s3://bucket/some/key → some/key."""
    return uri.split("/", 3)[3]


def checkpoint_entries(marker: dict) -> list[dict]:
    """The checkpoints a latest.json names (uri, size, sha256), newest first."""
    return marker["checkpoints"]


def stored_objects(client, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket (paginated), read straight from the server."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out
