"""Size classes and the infra config: which box each fine-tune asks for."""

import json
from types import SimpleNamespace

import pytest

from barbarossa import compute, leaderboard, registry

INFRA = {"compute": "kubernetes", "models": "az-gpt2-alpaca,az-tulu", "large_from_gpu_memory_gb": 40}


def test_each_class_gets_the_largest_need_of_its_members_and_an_empty_class_no_gpu():
    boxes = compute.deployed_boxes(INFRA)
    gpt2, tulu = (registry.select(name)[0].base.resources for name in ("az-gpt2-alpaca", "az-tulu"))
    assert boxes["small"]["memory_gb"] == gpt2.memory_gb and boxes["large"]["memory_gb"] == tulu.memory_gb
    assert boxes["large"]["timeout_hours"] == tulu.timeout_hours > boxes["small"]["timeout_hours"]
    only_small = compute.deployed_boxes({**INFRA, "models": "az-gpt2-alpaca"})
    assert only_small["large"] == compute.IDLE_BOX and only_small["large"]["gpus"] == 0
    assert compute.resources_kwargs(boxes["large"]) == {"gpu": 1, "cpu": tulu.cpu, "memory": tulu.memory_gb * 1024,
                                                        "disk": tulu.disk_gb * 1024}
    assert compute.timeout_kwargs({"timeout_hours": 0.5}) == {"minutes": 30}


def test_assign_sorts_items_into_classes_and_fills_an_empty_class_with_an_idle_item():
    items = registry.work_items(registry.select("az-gpt2-alpaca,az-bloom"))
    classes, refused = compute.assign(items, INFRA, compute.deployed_boxes(INFRA))
    assert [i["name"] for i in classes["small"]] == [i["name"] for i in items] and not refused
    assert [i["kind"] for i in classes["large"]] == ["idle"]


def test_a_model_bigger_than_the_deployed_box_is_refused_on_a_cluster_but_not_locally():
    deployed = compute.deployed_boxes({**INFRA, "models": "az-gpt2-alpaca"})  # sized without a large model
    items = registry.work_items(registry.select("az-tulu"))
    classes, refused = compute.assign(items, INFRA, deployed)
    assert {r["item"]["name"] for r in refused} == {i["name"] for i in items}
    assert "gpus 1 > 0" in refused[0]["error"] and "redeploy" in refused[0]["error"]
    classes, refused = compute.assign(items, {**INFRA, "compute": "local"}, deployed)
    assert not refused and len(classes["large"]) == len(items)


def test_gather_leaves_idle_items_out_and_names_the_failed_stage():
    def task(name, kind="candidate", failure=None, stage="evaluate"):
        return SimpleNamespace(item={"name": name, "kind": kind}, train=None, metrics=None, failure=failure, stage=stage)

    results = leaderboard.gather([task("(no large models)", "idle"), task("ok"), task("bad", failure="OOM")])
    assert [r["item"]["name"] for r in results] == ["ok", "bad"]
    assert results[0]["error"] is None and results[1]["error"] == "evaluate failed: OOM"


@pytest.mark.parametrize("text, message", [
    ('compute = "local"\nmodels = "local"', "missing key 'large_from_gpu_memory_gb'"),
    (json.dumps({**INFRA, "compute": "slurm"}), "compute must be one of local, kubernetes, batch"),
    (json.dumps({**INFRA, "gpus": 2}), "unknown key 'gpus'"),
    (json.dumps({**INFRA, "large_from_gpu_memory_gb": "40"}), "'large_from_gpu_memory_gb' must be int"),
    ("compute = ", "neither TOML nor a JSON object"),
])
def test_bad_infra_config_is_rejected_with_the_key(text, message):
    with pytest.raises(compute.InfraError, match=message):
        compute.parse_infra(text)


def test_shipped_infra_config_parses():
    assert compute.load_infra()["compute"] == "local"


def test_compute_decorator_merges_the_class_gpu_node_selector():
    infra = {**INFRA, "kubernetes": {"image": "img", "node_selector": {"pool": "ml"},
                                     "gpu_node_selector": {"large": {"gpu": "a100"}}}}
    assert compute.compute_decorator(infra, "large") == ("kubernetes", {"image": "img", "node_selector": {"pool": "ml", "gpu": "a100"}})
    assert compute.compute_decorator(infra, None) == ("kubernetes", {"image": "img", "node_selector": {"pool": "ml"}})
    assert compute.compute_decorator({**INFRA, "compute": "local"}, "large") is None
    batch = {**INFRA, "compute": "batch", "batch": {"queue": "q", "image": "img"}}
    assert compute.compute_decorator(batch, "small") == ("batch", {"queue": "q", "image": "img"})


@pytest.mark.parametrize("infra, message", [
    ({**INFRA, "compute": "batch", "trigger_event": "x"}, "Step Functions refuses @trigger"),
    ({**INFRA, "kubernetes": {"namespace": "ml"}}, r"\[kubernetes\] unknown key 'namespace'"),
    ({**INFRA, "kubernetes": {"gpu_node_selector": {"huge": {}}}}, "unknown size class"),
    ({**INFRA, "batch": {"queue": 3}}, r"\[batch\] 'queue' must be str"),
])
def test_bad_compute_tables_are_rejected(infra, message):
    with pytest.raises(compute.InfraError, match=message):
        compute.validate_infra(infra)


@pytest.mark.parametrize("name", ["local", "kubernetes.example", "batch.example"])
def test_shipped_infra_examples_validate(name):
    from barbarossa.registry import PROJECT_ROOT

    infra = compute.load_infra(PROJECT_ROOT / "configs" / "infra" / f"{name}.toml")
    assert compute.deployed_boxes(infra)["large"]["gpus"] >= (1 if infra["models"] == "seed" else 0)
