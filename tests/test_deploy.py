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
