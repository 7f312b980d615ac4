"""Where fine-tunes run and how big each box is: the `infra` config and size classes.

A Metaflow decorator belongs to a step, not to a foreach item, so one
`@resources` cannot fit both a 124M and a 13B model. The flow therefore has
one fine-tune step per *size class* (`tune_small`, `tune_large`), each a
foreach over the work items of its class. A deployment's roster selection
(`models` in the infra config, known when the flow is compiled) decides each
class's box: the largest need of the roster entries in that class. A class
with nothing selected gets a CPU-only box and one idle item, because Metaflow
refuses a foreach over an empty list and an idle task must not hold a GPU.

The same config attaches the compute decorator (`@kubernetes` / `@batch`) so
flow code carries `@resources` only and still runs locally.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

from barbarossa.registry import PROJECT_ROOT, select, work_items

CLASSES = ("small", "large")  # the flow has one tune_<class> step per entry
COMPUTE = ("local", "kubernetes", "batch")
DEFAULT_INFRA = PROJECT_ROOT / "configs" / "infra" / "local.toml"
IDLE_BOX = {"gpus": 0, "gpu_memory_gb": 0, "cpu": 1, "memory_gb": 4, "disk_gb": 10, "timeout_hours": 1}
_SCHEMA = {"compute": str, "models": str, "large_from_gpu_memory_gb": int, "kubernetes": dict, "batch": dict,
           "secrets": list, "trigger_event": str}
_KUBERNETES = {"image": str, "service_account": str, "node_selector": dict, "tolerations": list,
               "secrets": list, "gpu_node_selector": dict}
_BATCH = {"image": str, "queue": str, "iam_role": str}
_REQUIRED = ("compute", "models", "large_from_gpu_memory_gb")


class InfraError(ValueError):
    """An infra config that does not validate; the message names the key."""


def parse_infra(text: str) -> dict:
    """Metaflow Config parser: TOML (a file) or JSON (`--config-value`) text → validated infra dict.

    Runs when the flow is loaded, so a bad config fails before any step runs.
    """
    try:
        infra = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InfraError(f"infra config: neither TOML nor a JSON object: {exc}") from exc
    return validate_infra(infra)


def validate_infra(infra: dict) -> dict:
    for key in _REQUIRED:
        if key not in infra:
            raise InfraError(f"infra config: missing key '{key}'")
    for key, value in infra.items():
        if key not in _SCHEMA:
            raise InfraError(f"infra config: unknown key '{key}' (known: {', '.join(_SCHEMA)})")
        if not isinstance(value, _SCHEMA[key]) or isinstance(value, bool):
            raise InfraError(f"infra config: '{key}' must be {_SCHEMA[key].__name__}, got {value!r}")
    if infra["compute"] not in COMPUTE:
        raise InfraError(f"infra config: compute must be one of {', '.join(COMPUTE)}, got {infra['compute']!r}")
    for table, schema in (("kubernetes", _KUBERNETES), ("batch", _BATCH)):
        for key, value in infra.get(table, {}).items():
            if key not in schema:
                raise InfraError(f"infra config: [{table}] unknown key '{key}' (known: {', '.join(schema)})")
            if not isinstance(value, schema[key]):
                raise InfraError(f"infra config: [{table}] '{key}' must be {schema[key].__name__}, got {value!r}")
    unknown = set(infra.get("kubernetes", {}).get("gpu_node_selector", {})) - set(CLASSES)
    if unknown:
        raise InfraError(f"infra config: [kubernetes.gpu_node_selector] unknown size class(es) {', '.join(sorted(unknown))}")
    if infra.get("trigger_event") and infra["compute"] == "batch":
        raise InfraError("infra config: trigger_event needs Argo Workflows (compute = \"kubernetes\"); "
                         "Step Functions refuses @trigger")
    return infra


def load_infra(path: str | Path = DEFAULT_INFRA) -> dict:
    return parse_infra(Path(path).read_text(encoding="utf-8"))


def size_class(item: dict, infra: dict) -> str:
    """'large' when the item's base needs at least the configured GPU memory, else 'small'."""
    need = item["base"]["resources"]["gpu_memory_gb"]
    return "large" if need >= infra["large_from_gpu_memory_gb"] else "small"


def class_boxes(items: list[dict], infra: dict) -> dict[str, dict]:
    """Per class, the smallest box that fits every item of that class (an idle box when empty)."""
    boxes = {}
    for cls in CLASSES:
        needs = [item["base"]["resources"] for item in items if size_class(item, infra) == cls]
        boxes[cls] = {key: max(need[key] for need in needs) for key in IDLE_BOX} if needs else dict(IDLE_BOX)
    return boxes


def deployed_boxes(infra: dict) -> dict[str, dict]:
    """The boxes a flow compiled with this infra config asks for (see `mutators.FollowInfra`)."""
    return class_boxes(work_items(select(infra["models"])), infra)


def release_box(boxes: dict[str, dict]) -> dict:
    """The release step's box: the largest class's (a merge loads the biggest selected base in bf16 on a GPU).

    Which models the leaderboard releases is known only at run time, so the
    step is sized for the largest model the deployment may release; with
    nothing but idle classes it gets the idle box.
    """
    return {key: max(box[key] for box in boxes.values()) for key in IDLE_BOX}


def resources_kwargs(box: dict) -> dict:
    """Keyword arguments of Metaflow's @resources (memory and disk in MB)."""
    return {"gpu": box["gpus"], "cpu": box["cpu"], "memory": box["memory_gb"] * 1024, "disk": box["disk_gb"] * 1024}


def timeout_kwargs(box: dict) -> dict:
    return {"minutes": math.ceil(box["timeout_hours"] * 60)}


def compute_decorator(infra: dict, cls: str | None = None) -> tuple[str, dict] | None:
    """('kubernetes' | 'batch', its keyword arguments) for a step; None when running locally.

    A size class's GPU node selector is merged into the step's node selector, so
    a 13B model lands on an 80 GB node and a 124M model on a small one.
    """
    if infra["compute"] == "local":
        return None
    if infra["compute"] == "batch":
        return "batch", dict(infra.get("batch", {}))
    settings = {k: v for k, v in infra.get("kubernetes", {}).items() if k != "gpu_node_selector"}
    gpu_nodes = infra.get("kubernetes", {}).get("gpu_node_selector", {}).get(cls) if cls else None
    if gpu_nodes:
        settings["node_selector"] = {**settings.get("node_selector", {}), **gpu_nodes}
    return "kubernetes", settings


def idle_item(cls: str) -> dict:
    return {"name": f"(no {cls} models)", "kind": "idle", "refusal": None}


def _misfit(item: dict, box: dict) -> str | None:
    need = item["base"]["resources"]
    short = [key for key in IDLE_BOX if need[key] > box[key]]
    if not short:
        return None
    wanted = ", ".join(f"{key} {need[key]} > {box[key]}" for key in short)
    return (f"this deployment's box is too small ({wanted}); the deployment was sized for another roster "
            f"selection: redeploy with this model in the infra config's `models`")


def assign(items: list[dict], infra: dict, deployed: dict[str, dict] | None = None) -> tuple[dict, list[dict]]:
    """({class: foreach items}, refused results).

    On a cluster an item whose needs exceed its class's deployed box is refused
    (it would be killed for memory hours in); locally boxes are not enforced.
    Every class gets at least its idle item.
    """
    by_class = {cls: [] for cls in CLASSES}
    refused = []
    for item in items:
        cls = size_class(item, infra)
        reason = _misfit(item, deployed[cls]) if deployed and infra["compute"] != "local" else None
        if reason:
            refused.append({"item": item, "train": None, "metrics": None, "error": f"refused: {reason}"})
        else:
            by_class[cls].append(item)
    return {cls: members or [idle_item(cls)] for cls, members in by_class.items()}, refused
