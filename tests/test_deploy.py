"""Compiling the flow for Argo Workflows offline: each size class asks for its roster entries' box."""

import json
import os
import subprocess
import sys

import pytest

from barbarossa import registry
from conftest import ROOT, moto_s3

FLOW = str(ROOT / "flows" / "finetune_flow.py")


@pytest.fixture
def s3_datastore(monkeypatch):
    with moto_s3(monkeypatch, bucket="barbarossa-deploy") as bucket:
        monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
        monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_S3", f"{bucket}/metaflow")
        yield bucket


def compile_argo(infra: dict, env: dict) -> dict:
    """`argo-workflows create --only-json` (uploads the code package to the local S3, talks to no cluster)."""
    done = subprocess.run(
        [sys.executable, FLOW, "--config-value", "infra", json.dumps(infra), "argo-workflows", "create", "--only-json"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout[done.stdout.index("{"):])


def test_argo_fine_tune_steps_ask_for_what_their_roster_entries_need(s3_datastore):
    infra = {"compute": "kubernetes", "models": "az-gpt2-alpaca,az-tulu", "large_from_gpu_memory_gb": 40}
    workflow = compile_argo(infra, {"METAFLOW_KUBERNETES_CONTAINER_IMAGE": "registry.example/barbarossa:test"})
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    small, large = (registry.select(name)[0].base.resources for name in ("az-gpt2-alpaca", "az-tulu"))
    for step, need in (("tune-small", small), ("tune-large", large)):
        container = templates[step]["container"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(need.gpus)
        assert float(container["resources"]["requests"]["cpu"]) == need.cpu
        assert float(container["resources"]["requests"]["memory"].rstrip("M")) == need.memory_gb * 1024
        assert templates[step]["activeDeadlineSeconds"] == need.timeout_hours * 3600
        assert templates[step]["retryStrategy"]["limit"] >= 1
        assert container["image"] == "registry.example/barbarossa:test"
    assert templates["tune-small"]["container"]["resources"] != templates["tune-large"]["container"]["resources"]
    assert "nvidia.com/gpu" not in templates["start"]["container"]["resources"]["limits"]


def test_code_package_carries_the_library_its_configs_and_data(tmp_path):
    """Remote tasks import `barbarossa` from the code package, not from whatever their image holds."""
    import tarfile

    saved = subprocess.run([sys.executable, FLOW, "package", "save", str(tmp_path / "code.tgz")],
                           capture_output=True, text=True, env=os.environ, timeout=120)
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(tmp_path / "code.tgz") as archive:
        names = set(archive.getnames())
        archive.extractall(tmp_path / "pkg", filter="data")
    code = tmp_path / "pkg" / ".mf_code"
    for needed in ("barbarossa/training.py", "barbarossa/metrics/chrf.py", "configs/rosters/seed.toml",
                   "configs/profiles/gpu.toml", "configs/infra/local.toml", "data/az_alpaca_sample.jsonl"):
        assert f".mf_code/{needed}" in names, needed
    assert not any("/.venv/" in name or name.endswith(".safetensors") for name in names)
    probe = (f"import sys; sys.path.insert(0, {str(code)!r}); import barbarossa.registry as r, barbarossa.data as d; "
             "print(r.__file__); print(len(r.select('seed'))); print(len(d.load('bundled').records))")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr
    where, seed, rows = ran.stdout.split()
    assert where.startswith(str(code)) and seed == "29" and int(rows) > 300
