"""Compiling the flow for Argo Workflows offline: each size class asks for its roster entries' box."""

import json
import os
import subprocess
import sys

import pytest
from conftest import moto_s3

from barbarossa.infra.deploy import FLOW, compile_deployment
from barbarossa.models import roster
from containers.batch import all_states, batch_world

pytestmark = [pytest.mark.flow, pytest.mark.server]


@pytest.fixture
def s3_datastore(monkeypatch):
    with moto_s3(monkeypatch, bucket="barbarossa-deploy") as bucket:
        monkeypatch.setenv("METAFLOW_DEFAULT_DATASTORE", "s3")
        monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_S3", f"{bucket}/metaflow")
        yield bucket


ARGO_EVENTS = {
    "METAFLOW_ARGO_EVENTS_EVENT": "metaflow-event",
    "METAFLOW_ARGO_EVENTS_EVENT_BUS": "default",
    "METAFLOW_ARGO_EVENTS_EVENT_SOURCE": "argo-events-webhook",
    "METAFLOW_ARGO_EVENTS_SERVICE_ACCOUNT": "operate-workflow-sa",
    "METAFLOW_KUBERNETES_NAMESPACE": "ml",
}


def compile_flow(orchestrator: str, infra: dict, env: dict) -> dict:
    return compile_deployment(orchestrator, infra, {**ARGO_EVENTS, **env})


def compile_argo(infra: dict, env: dict) -> dict:
    return compile_flow("argo-workflows", infra, env)


def test_argo_fine_tune_steps_ask_for_what_their_roster_entries_need(s3_datastore):
    infra = {"compute": "kubernetes", "models": "az-gpt2-alpaca,az-tulu", "large_from_gpu_memory_gb": 40}
    workflow = compile_argo(infra, {"METAFLOW_KUBERNETES_CONTAINER_IMAGE": "registry.example/barbarossa:test"})
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    small, large = (roster.select(name)[0].base.resources for name in ("az-gpt2-alpaca", "az-tulu"))
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
    annotations = workflow["metadata"]["annotations"]
    assert json.loads(annotations["metaflow/cron"])["schedule"] == "0 0 ? * SUN"  # @schedule(weekly=True)
    assert annotations["metaflow/project_name"] == "barbarossa"


def test_argo_deployment_follows_the_kubernetes_infra_config(s3_datastore):
    infra = {
        "compute": "kubernetes",
        "models": "az-gpt2-alpaca,az-tulu",
        "large_from_gpu_memory_gb": 40,
        "trigger_event": "barbarossa.dataset-updated",
        "secrets": ["barbarossa-hf-token"],
        "kubernetes": {
            "image": "registry.example/barbarossa:abc1234",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "gpu_node_selector": {
                "small": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                "large": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            },
        },
    }
    workflow = compile_argo(infra, {})
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    assert templates["tune-small"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert templates["tune-large"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert all(
        templates[s]["container"]["image"] == "registry.example/barbarossa:abc1234"
        for s in ("start", "tune-small", "tune-large", "join", "release")
    )
    assert templates["tune-large"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    # release merges the largest selected base on a GPU: it gets the largest class's box
    large = templates["tune-large"]["container"]["resources"]["limits"]
    assert templates["release"]["container"]["resources"]["limits"]["nvidia.com/gpu"] == large["nvidia.com/gpu"]
    assert (
        templates["release"]["container"]["resources"]["requests"]["memory"]
        == templates["tune-large"]["container"]["resources"]["requests"]["memory"]
    )
    assert workflow["metadata"]["namespace"] == "ml"
    triggers = json.loads(workflow["metadata"]["annotations"]["metaflow/triggers"])
    assert triggers == [{"name": "barbarossa.dataset-updated", "type": "event"}]
    # the event's payload reaches the run (the Sensor mapping dataset_uri → train-data is made on a real deploy)
    arguments = [p["name"] for p in workflow["spec"]["arguments"]["parameters"]]
    assert "train-data" in arguments and any(name.startswith("barbarossadatasetupdated") for name in arguments)


def test_step_functions_fine_tune_steps_ask_batch_for_their_roster_box(s3_datastore):
    import boto3

    endpoint = os.environ["METAFLOW_S3_ENDPOINT_URL"]
    role = batch_world(endpoint)
    infra = {
        "compute": "batch",
        "models": "az-gpt2-alpaca,az-tulu",
        "large_from_gpu_memory_gb": 40,
        "batch": {"image": "registry.example/barbarossa:abc1234", "queue": "barbarossa-gpu"},
    }
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "METAFLOW_SFN_DYNAMO_DB_TABLE": "barbarossa-foreach",
        "METAFLOW_BATCH_JOB_QUEUE": "barbarossa-gpu",
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": role,
        "METAFLOW_SFN_IAM_ROLE": role,
    }
    states = all_states(compile_flow("step-functions", infra, env)["States"])
    small, large = (roster.select(name)[0].base.resources for name in ("az-gpt2-alpaca", "az-tulu"))
    for step, need in (("tune_small", small), ("tune_large", large)):
        job = states[step]["Parameters"]
        wanted = {"VCPU": str(need.cpu), "GPU": str(need.gpus), "MEMORY": str(need.memory_gb * 1024)}
        assert {r["Type"]: r["Value"] for r in job["ContainerOverrides"]["ResourceRequirements"]} == wanted
        assert (
            job["JobQueue"] == "barbarossa-gpu"
            and job["Timeout"]["AttemptDurationSeconds"] == need.timeout_hours * 3600
        )
        assert job["RetryStrategy"]["Attempts"] >= 2
    images = {
        d["containerProperties"]["image"]
        for d in boto3.client("batch", endpoint_url=endpoint, region_name="us-east-1").describe_job_definitions()[
            "jobDefinitions"
        ]
    }
    assert images == {"registry.example/barbarossa:abc1234"}


def test_image_check_compiles_through_the_same_function(s3_datastore):
    """containers/image_check.py's compile: the tiny roster in its image; a failed create names the cause."""
    from containers import image_check

    infra = {"compute": "kubernetes", "models": "tiny-llama-lora", "large_from_gpu_memory_gb": 40}
    workflow = image_check.compile_flow("argo-workflows", {**infra, "kubernetes": {"image": image_check.IMAGE}}, {})
    assert workflow["kind"] == "WorkflowTemplate"
    assert {t["container"]["image"] for t in workflow["spec"]["templates"] if "container" in t} == {image_check.IMAGE}
    batch = {**infra, "compute": "batch", "batch": {"image": "x", "queue": "nowhere"}}  # no such queue on moto
    with pytest.raises(SystemExit, match=r"step-functions create failed(.|\n)*Job Queue nowhere not found"):
        image_check.compile_flow("step-functions", batch, {"AWS_ENDPOINT_URL": os.environ["METAFLOW_S3_ENDPOINT_URL"]})


def test_code_package_carries_the_library_its_configs_and_data(tmp_path):
    """Remote tasks import `barbarossa` from the code package, not from whatever their image holds."""
    import tarfile

    saved = subprocess.run(
        [sys.executable, FLOW, "package", "save", str(tmp_path / "code.tgz")],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(tmp_path / "code.tgz") as archive:
        names = set(archive.getnames())
        archive.extractall(tmp_path / "pkg", filter="data")
    code = tmp_path / "pkg" / ".mf_code"
    for needed in (
        "barbarossa/train/loop.py",
        "barbarossa/evaluate/metrics/chrf.py",
        "configs/rosters/seed.toml",
        "configs/profiles/gpu.toml",
        "configs/infra/local.toml",
        "data/az_alpaca_sample.jsonl",
        "benchmarks/results/gpu-check-h200.json",
    ):
        assert f".mf_code/{needed}" in names, needed
    assert not any("/.venv/" in name or name.endswith(".safetensors") for name in names)
    probe = (
        f"import sys; sys.path.insert(0, {str(code)!r}); "
        "import barbarossa.models.roster as r, barbarossa.data.instructions as d; "
        "print(r.__file__); print(len(r.select('seed'))); print(len(d.load('bundled').records))"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ran.returncode == 0, ran.stderr
    where, seed, rows = ran.stdout.split()
    assert where.startswith(str(code)) and seed == "29" and int(rows) > 300
