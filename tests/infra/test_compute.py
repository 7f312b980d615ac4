"""Size classes and the infra config: which box each fine-tune asks for."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT

from barbarossa.decide import leaderboard
from barbarossa.infra import compute
from barbarossa.models import roster


def load_infra(path=compute.DEFAULT_INFRA) -> dict:
    """A validated infra file, without `check_environment`: reading a config needs no cluster settings."""
    return compute.validate_infra(compute._read(Path(path).read_text(encoding="utf-8")))


INFRA = {"compute": "kubernetes", "models": "az-gpt2-alpaca,az-tulu", "large_from_gpu_memory_gb": 40}


def test_each_class_gets_the_largest_need_of_its_members_and_an_empty_class_no_gpu():
    boxes = compute.deployed_boxes(INFRA)
    gpt2, tulu = (roster.select(name)[0].base.resources for name in ("az-gpt2-alpaca", "az-tulu"))
    assert boxes["small"]["memory_gb"] == gpt2.memory_gb and boxes["large"]["memory_gb"] == tulu.memory_gb
    assert boxes["large"]["timeout_hours"] == tulu.timeout_hours > boxes["small"]["timeout_hours"]
    only_small = compute.deployed_boxes({**INFRA, "models": "az-gpt2-alpaca"})
    assert only_small["large"] == compute.IDLE_BOX and only_small["large"]["gpus"] == 0
    assert compute.resources_kwargs(boxes["large"]) == {
        "gpu": 1,
        "cpu": tulu.cpu,
        "memory": tulu.memory_gb * 1024,
        "disk": tulu.disk_gb * 1024,
    }
    assert compute.timeout_kwargs({"timeout_hours": 0.5}) == {"minutes": 30}


def test_assign_sorts_items_into_classes_and_fills_an_empty_class_with_an_idle_item():
    items = roster.work_items(roster.select("az-gpt2-alpaca,az-bloom"))
    classes, refused = compute.assign(items, INFRA, compute.deployed_boxes(INFRA))
    assert [i["name"] for i in classes["small"]] == [i["name"] for i in items] and not refused
    assert [i["kind"] for i in classes["large"]] == ["idle"]


def test_a_model_bigger_than_the_deployed_box_is_refused_on_a_cluster_but_not_locally():
    deployed = compute.deployed_boxes({**INFRA, "models": "az-gpt2-alpaca"})  # sized without a large model
    items = roster.work_items(roster.select("az-tulu"))
    classes, refused = compute.assign(items, INFRA, deployed)
    assert {r["item"]["name"] for r in refused} == {i["name"] for i in items}
    assert "gpus 1 > 0" in refused[0]["error"] and "redeploy" in refused[0]["error"]
    classes, refused = compute.assign(items, {**INFRA, "compute": "local"}, deployed)
    assert not refused and len(classes["large"]) == len(items)


def test_gather_leaves_idle_items_out_and_names_the_failed_stage():
    def task(name, kind="candidate", failure=None, stage="evaluate"):
        return SimpleNamespace(
            item={"name": name, "kind": kind}, train=None, metrics=None, failure=failure, stage=stage
        )

    results = leaderboard.gather([task("(no large models)", "idle"), task("ok"), task("bad", failure="OOM")])
    assert [r["item"]["name"] for r in results] == ["ok", "bad"]
    assert results[0]["error"] is None and results[1]["error"] == "evaluate failed: OOM"


@pytest.mark.parametrize(
    "text, message",
    [
        ('compute = "local"\nmodels = "local"', "missing key 'large_from_gpu_memory_gb'"),
        (
            json.dumps({**INFRA, "compute": "slurm"}),
            'compute must be one of "local", "kubernetes", "batch", got \'slurm\'',
        ),
        (json.dumps({**INFRA, "gpus": 2}), r"unknown key\(s\) gpus \(known: compute, models, "),
        (json.dumps({**INFRA, "large_from_gpu_memory_gb": "40"}), "large_from_gpu_memory_gb must be int, got '40'"),
        ("compute = ", "neither TOML nor a JSON object"),
    ],
)
def test_bad_infra_config_is_rejected_with_the_key(text, message):
    with pytest.raises(compute.InfraError, match=message):
        compute.parse_infra(text)


def test_shipped_infra_config_parses():
    assert load_infra()["compute"] == "local"


def test_compute_decorator_merges_the_class_gpu_node_selector():
    infra = {
        **INFRA,
        "kubernetes": {
            "image": "img",
            "node_selector": {"pool": "ml"},
            "gpu_node_selector": {"large": {"gpu": "a100"}},
        },
    }
    assert compute.compute_decorator(infra, "large") == (
        "kubernetes",
        {"image": "img", "node_selector": {"pool": "ml", "gpu": "a100"}},
    )
    assert compute.compute_decorator(infra, None) == ("kubernetes", {"image": "img", "node_selector": {"pool": "ml"}})
    assert compute.compute_decorator({**INFRA, "compute": "local"}, "large") is None
    batch = {**INFRA, "compute": "batch", "batch": {"queue": "q", "image": "img"}}
    assert compute.compute_decorator(batch, "small") == ("batch", {"queue": "q", "image": "img"})


@pytest.mark.parametrize(
    "infra, message",
    [
        ({**INFRA, "compute": "batch", "trigger_event": "x"}, "Step Functions refuses @trigger"),
        ({**INFRA, "kubernetes": {"namespace": "ml"}}, r"\[kubernetes\] unknown key\(s\) namespace \(known: image, "),
        (
            {**INFRA, "kubernetes": {"gpu_node_selector": {"huge": {}}}},
            r"\[kubernetes\] gpu_node_selector has unknown size class\(es\) huge",
        ),
        ({**INFRA, "batch": {"queue": 3}}, r"\[batch\] queue must be str, got 3"),
        ({**INFRA, "kubernetes": "img"}, r"^infra config: kubernetes must be table, got 'img'$"),
        ({**INFRA, "kubernetes": {"tolerations": "all"}}, r"\[kubernetes\] tolerations must be list, got 'all'"),
        ({**INFRA, "secrets": "hf-token"}, r"^infra config: secrets must be list, got 'hf-token'$"),
    ],
)
def test_bad_compute_tables_are_rejected(infra, message):
    with pytest.raises(compute.InfraError, match=message):
        compute.validate_infra(infra)


def test_a_validated_infra_config_stays_the_plain_dict_it_was_given():
    """The flow holds it as a Metaflow Config (JSON): the keys it states, lists as lists, plus output_root."""
    given = {**INFRA, "kubernetes": {"image": "img", "tolerations": [{"key": "gpu"}]}, "secrets": ["hf"]}
    assert compute.validate_infra(json.loads(json.dumps(given))) == {**given, "output_root": "runs"}


@pytest.mark.parametrize("name", ["local", "kubernetes.example", "batch.example"])
def test_shipped_infra_examples_validate(name):
    from barbarossa.config import PROJECT_ROOT

    infra = load_infra(PROJECT_ROOT / "configs" / "infra" / f"{name}.toml")
    assert compute.deployed_boxes(infra)["large"]["gpus"] >= (1 if infra["models"] == "seed" else 0)


def _new_machine(home) -> dict:
    """The environment of a machine with neither Metaflow nor AWS configured (no config files either)."""
    for name in ("config", "credentials"):
        (home / name).write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "METAFLOW_"))}
    return {
        **env,
        "HOME": str(home),
        "METAFLOW_HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"],
    }


@pytest.fixture
def new_machine(monkeypatch, tmp_path):
    from metaflow import metaflow_config_funcs

    monkeypatch.setattr(os, "environ", _new_machine(tmp_path))
    monkeypatch.setattr(metaflow_config_funcs, "METAFLOW_CONFIG", {})  # ~/.metaflowconfig, read once per process
    monkeypatch.setattr(metaflow_config_funcs, "METAFLOW_LOCAL_CONFIG", {})


S3 = {"METAFLOW_DEFAULT_DATASTORE": "s3", "METAFLOW_DATASTORE_SYSROOT_S3": "s3://bucket/metaflow"}
AWS = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
KUBE = {**INFRA, "kubernetes": {"image": "registry.example/barbarossa:abc"}}
BATCH = {**INFRA, "compute": "batch", "batch": {"image": "img", "queue": "gpu"}}


@pytest.mark.parametrize(
    "infra, env, missing",
    [
        (
            KUBE,
            {},
            "Metaflow's datastore is 'local', which a remote task cannot read — set METAFLOW_DEFAULT_DATASTORE=s3",
        ),
        (KUBE, {"METAFLOW_DEFAULT_DATASTORE": "s3"}, "no S3 datastore root — set METAFLOW_DATASTORE_SYSROOT_S3"),
        (
            INFRA,
            S3,
            r"no container image — set \[kubernetes\] image in the infra config "
            r"\(or METAFLOW_KUBERNETES_CONTAINER_IMAGE\)",
        ),
        ({**BATCH, "batch": {"queue": "gpu"}}, {**S3, **AWS}, r"no container image — set \[batch\] image"),
        ({**BATCH, "batch": {"image": "img"}}, {**S3, **AWS}, r"no Batch job queue — set \[batch\] queue"),
        (
            BATCH,
            {**S3, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
            "no AWS region — set AWS_DEFAULT_REGION",
        ),
        (BATCH, {**S3, "AWS_DEFAULT_REGION": "us-east-1"}, "no AWS credentials — set AWS_ACCESS_KEY_ID"),
    ],
)
def test_remote_compute_names_what_this_machine_lacks_in_one_line(new_machine, infra, env, missing):
    os.environ.update(env)
    with pytest.raises(compute.InfraError, match=missing) as err:
        compute.check_environment(infra, argv=["finetune_flow.py", "run"])
    assert str(err.value).startswith(f'infra config: compute = "{infra["compute"]}" cannot launch from here: ')
    assert "\n" not in str(err.value) and str(err.value).count(" — ") == 1  # only that one thing is missing


def test_remote_compute_passes_with_its_settings_from_the_config_or_metaflow(new_machine):
    os.environ.update({**S3, **AWS})
    assert compute.check_environment(KUBE, argv=[]) is KUBE
    assert compute.check_environment(BATCH, argv=[]) is BATCH
    os.environ.update({"METAFLOW_KUBERNETES_CONTAINER_IMAGE": "img", "METAFLOW_BATCH_JOB_QUEUE": "gpu"})
    compute.check_environment(INFRA, argv=[])  # image from Metaflow's settings, as `make deploy-argo` may set it
    compute.check_environment({**BATCH, "batch": {"image": "img"}}, argv=[])
    del os.environ["METAFLOW_DEFAULT_DATASTORE"]
    with pytest.raises(compute.InfraError, match="datastore is 'local'"):
        compute.check_environment(KUBE, argv=["flow.py", "run"])
    compute.check_environment(KUBE, argv=["flow.py", "--datastore=s3", "run"])  # the command line overrides
    compute.check_environment(KUBE, argv=["flow.py", "--datastore", "s3", "run"])


def test_local_compute_and_remote_tasks_are_not_checked(new_machine):
    compute.check_environment({**INFRA, "compute": "local"}, argv=[])
    os.environ["METAFLOW_RUNTIME_ENVIRONMENT"] = "kubernetes"  # set by Metaflow inside a pod: the launcher checked
    compute.check_environment(KUBE, argv=[])
    assert load_infra(ROOT / "configs" / "infra" / "kubernetes.example.toml")  # reading a file checks nothing


@pytest.mark.flow
def test_a_remote_infra_config_fails_at_load_in_one_line_without_a_traceback(tmp_path):
    """`run` with the Kubernetes example on a new machine: Metaflow prints our line, nothing is launched."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "flows" / "finetune_flow.py"),
            "--config",
            "infra",
            str(ROOT / "configs" / "infra" / "kubernetes.example.toml"),
            "run",
        ],
        capture_output=True,
        text=True,
        env=_new_machine(tmp_path),
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in output and "Workflow starting" not in output, output
    headline, line = [row.strip() for row in output.splitlines() if row.strip()]  # Metaflow's headline, our line
    assert headline == "Infra config:", output
    assert line.startswith(
        "infra config: compute = \"kubernetes\" cannot launch from here: Metaflow's datastore is 'local'"
    )


def test_remote_compute_wants_an_s3_output_root_and_local_takes_a_folder():
    compute.check_output_root({"compute": "local"}, "runs")
    compute.check_output_root({"compute": "kubernetes"}, "s3://bucket/barbarossa")
    with pytest.raises(compute.InfraError, match="'runs' is a local folder, but compute = \"batch\""):
        compute.check_output_root({"compute": "batch"}, "runs")
    assert (
        compute.validate_infra({"compute": "local", "models": "local", "large_from_gpu_memory_gb": 40})["output_root"]
        == "runs"
    )
