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

A remote compute setting is also checked against this machine when the flow
loads (`check_environment`): what Kubernetes or Batch needs that can be known
without a cluster, so a missing image, queue, region or S3 datastore is one
line before anything is packaged or launched, not a pod that cannot start.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tomllib
from dataclasses import dataclass

from barbarossa import storage
from barbarossa.config import PROJECT_ROOT, Section, SettingError, setting
from barbarossa.errors import UserError
from barbarossa.models.roster import select, work_items

CLASSES = ("small", "large")  # the flow has one tune_<class> step per entry
COMPUTE = ("local", "kubernetes", "batch")
DEFAULT_INFRA = PROJECT_ROOT / "configs" / "infra" / "local.toml"
IDLE_BOX = {"gpus": 0, "gpu_memory_gb": 0, "cpu": 1, "memory_gb": 4, "disk_gb": 10, "timeout_hours": 1}


class Misconfigured(UserError):
    """A setting this machine or a config lacks; the message is one line: what is missing and what to set."""

    headline = "Misconfigured"


class InfraError(Misconfigured):
    """An infra config that does not validate, or that this machine cannot launch; the message names the key."""

    headline = "Infra config"


@dataclass(frozen=True)
class Kubernetes(Section):
    """The @kubernetes decorator's settings for every remote step (Metaflow's own configuration fills the rest)."""

    image: str = setting("", "container image (else METAFLOW_KUBERNETES_CONTAINER_IMAGE)")
    service_account: str = setting("", "the pods' service account")
    node_selector: dict = setting(help="node labels every step's pod must match", factory=dict)
    tolerations: tuple[dict, ...] = setting((), "taints the pods tolerate: [{ key, operator, effect }]")
    secrets: tuple[str, ...] = setting((), "Kubernetes secrets mounted into every pod")
    gpu_node_selector: dict = setting(
        help="per size class (small, large), node labels merged into that class's node_selector", factory=dict
    )

    def check(self) -> None:
        unknown = sorted(set(self.gpu_node_selector) - set(CLASSES))
        if unknown:
            raise SettingError(
                "gpu_node_selector", f"has unknown size class(es) {', '.join(unknown)} (known: {', '.join(CLASSES)})"
            )


@dataclass(frozen=True)
class Batch(Section):
    """The @batch decorator's settings for every remote step (Metaflow's own configuration fills the rest)."""

    image: str = setting("", "container image (else METAFLOW_BATCH_CONTAINER_IMAGE)")
    queue: str = setting("", "AWS Batch job queue (else METAFLOW_BATCH_JOB_QUEUE)")
    iam_role: str = setting("", "IAM role the jobs run as")


@dataclass(frozen=True)
class Infra(Section):
    """Where fine-tunes run and which roster selection their boxes are sized for (read when the flow loads)."""

    ERROR = InfraError
    compute: str = setting(help="where steps run", choices=COMPUTE)
    models: str = setting(help="roster selection the boxes are sized for; also the --models default")
    large_from_gpu_memory_gb: int = setting(help="bases needing at least this much GPU memory fine-tune in tune_large")
    kubernetes: Kubernetes = setting(help='with compute = "kubernetes"', factory=Kubernetes)
    batch: Batch = setting(help='with compute = "batch"', factory=Batch)
    secrets: tuple[str, ...] = setting((), "@secrets sources (HF_TOKEN for gated models and publishing)")
    trigger_event: str = setting("", "an Argo Events event that starts the deployed flow (Kubernetes only)")
    output_root: str = setting("runs", "splits, adapters, checkpoints: a folder, or s3:// (remote compute needs it)")

    def check(self) -> None:
        if self.trigger_event and self.compute == "batch":
            raise SettingError(
                "trigger_event", 'needs Argo Workflows (compute = "kubernetes"); Step Functions refuses @trigger'
            )


def _read(text: str) -> dict:
    try:
        return json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise InfraError(f"infra config: neither TOML nor a JSON object: {exc}") from exc


def parse_infra(text: str) -> dict:
    """Metaflow Config parser: TOML (a file) or JSON (`--config-value`) text → validated infra dict.

    Runs when the flow is loaded (run, resume, argo-workflows / step-functions
    create), before any step: the earliest point at which both the config and
    this machine's settings are known, so a bad config — or remote compute this
    machine cannot launch (`check_environment`) — fails there. `start` would be
    too late: with remote compute it runs in the very pod that cannot start.
    The price: every command that loads the flow (`show`, `package save`)
    with a remote config wants that machine's settings too; local.toml never does.
    """
    return check_environment(validate_infra(_read(text)))


def validate_infra(infra: dict) -> dict:
    """`infra` checked against `Infra`, with the default output_root filled in.

    Stays the plain dict it was given (only the keys it states): the flow holds it as a Metaflow Config, which
    must be JSON, and a decorator should receive only the settings the file names.
    """
    checked = Infra.from_table(infra, "infra config")
    return {**infra, "output_root": checked.output_root}


def aws_problems() -> list[str]:
    """One "no X — set Y" phrase per thing boto3 cannot resolve here (region, credentials); empty when both resolve.

    Asks boto3 itself (environment, ~/.aws/config and credentials, SSO, an
    instance or pod role), so whatever a later client would find counts here too.
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session()
    except BotoCoreError as err:  # AWS_PROFILE names a profile the config files lack
        return [f"{err} — fix AWS_PROFILE or add that profile to ~/.aws/config"]
    problems = []
    if not session.region_name:  # boto3 reads AWS_DEFAULT_REGION, not AWS_REGION (the AWS CLI v2 reads both)
        ignored = "; boto3 does not read AWS_REGION" if os.environ.get("AWS_REGION") else ""
        problems.append(f"no AWS region — set AWS_DEFAULT_REGION (or region in ~/.aws/config{ignored})")
    if session.get_credentials() is None:
        problems.append(
            "no AWS credentials — set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE, or run `aws configure`)"
        )
    return problems


def check_output_root(infra: dict, output_root: str) -> None:
    """Remote tasks each run in their own container: the splits `start` writes and the adapters the fine-tunes
    write must be where every container reads them, not in a folder of one container."""
    if infra["compute"] != "local" and not storage.is_s3(output_root):
        raise InfraError(
            f'--output-root {output_root!r} is a local folder, but compute = "{infra["compute"]}" runs each '
            "task in its own container: give an s3:// prefix (--output-root, or output_root in the infra config)"
        )


# What a remote task can read the run's artifacts and code package from (Metaflow's own rule per decorator).
REMOTE_DATASTORES = {"kubernetes": ("s3", "azure", "gs"), "batch": ("s3",)}


def _metaflow_setting(name: str, default: str | None = None) -> str | None:
    """METAFLOW_<name> from the environment, else Metaflow's config files (~/.metaflowconfig), read now."""
    from metaflow.metaflow_config_funcs import from_conf

    return from_conf(name, default) or default


def datastore(argv: list[str] | None = None) -> str:
    """The datastore this Metaflow command will use: `--datastore` on its command line, else the configured default.

    Read from the command line because the infra config is parsed while
    Metaflow is still reading its options; without it `--datastore=s3 run`
    would be refused for a local default it is about to override.
    """
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg.startswith("--datastore="):
            return arg.split("=", 1)[1]
        if arg == "--datastore" and i + 1 < len(argv):
            return argv[i + 1]
    return os.environ.get("METAFLOW_DATASTORE") or _metaflow_setting("DEFAULT_DATASTORE", "local")


def environment_problems(infra: dict, argv: list[str] | None = None) -> list[str]:
    """What the infra config's compute backend needs and this machine lacks, one "what — set what" phrase each.

    Only what can be known without a cluster: a container image (Metaflow
    would otherwise fall back to a bare python image with no torch), a
    non-local datastore (a remote task cannot read this machine's files),
    and for Batch a job queue plus an AWS region and credentials to submit with.
    Settings may come from the infra table or Metaflow's own configuration.
    """
    kind = infra["compute"]
    if kind == "local":
        return []
    table, problems = infra.get(kind, {}), []
    image_setting = "KUBERNETES_CONTAINER_IMAGE" if kind == "kubernetes" else "BATCH_CONTAINER_IMAGE"
    if not (table.get("image") or _metaflow_setting(image_setting) or _metaflow_setting("DEFAULT_CONTAINER_IMAGE")):
        problems.append(f"no container image — set [{kind}] image in the infra config (or METAFLOW_{image_setting})")
    if kind == "batch" and not (table.get("queue") or _metaflow_setting("BATCH_JOB_QUEUE")):
        problems.append("no Batch job queue — set [batch] queue in the infra config (or METAFLOW_BATCH_JOB_QUEUE)")
    store = datastore(argv)
    if store not in REMOTE_DATASTORES[kind]:
        problems.append(
            f"Metaflow's datastore is {store!r}, which a remote task cannot read — set "
            f"METAFLOW_DEFAULT_DATASTORE=s3 and METAFLOW_DATASTORE_SYSROOT_S3=s3://<bucket>/metaflow "
            f"(or run `metaflow configure aws`)"
        )
    elif store == "s3" and not _metaflow_setting("DATASTORE_SYSROOT_S3"):
        problems.append("no S3 datastore root — set METAFLOW_DATASTORE_SYSROOT_S3=s3://<bucket>/metaflow")
    if kind == "batch":
        problems += aws_problems()
    return problems


def check_environment(infra: dict, argv: list[str] | None = None) -> dict:
    """`infra`, unchanged, or InfraError: one line naming everything remote compute lacks on this machine.

    Skipped inside a remote task (Metaflow sets METAFLOW_RUNTIME_ENVIRONMENT
    there): the launcher already passed, and a task's environment lacks
    launcher-only settings such as the image variable.
    """
    if os.environ.get("METAFLOW_RUNTIME_ENVIRONMENT", "local") != "local":
        return infra
    problems = environment_problems(infra, argv)
    if problems:
        raise InfraError(
            f'infra config: compute = "{infra["compute"]}" cannot launch from here: ' + "; ".join(problems)
        )
    return infra


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
    return (
        f"this deployment's box is too small ({wanted}); the deployment was sized for another roster "
        f"selection: redeploy with this model in the infra config's `models`"
    )


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
