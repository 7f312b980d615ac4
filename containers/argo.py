"""Run a compiled Argo WorkflowTemplate in Docker the way Argo Workflows runs it, for `make image-check`.

Nothing here knows the flow's steps: the DAG, each task's container command, arguments and
environment come from the document `argo-workflows create --only-json` wrote. Argo's part is
done as Argo does it — `{{...}}` placeholders filled (workflow name and creation time, inputs,
task outputs, `{{item}}` of a `withParam` fan-out, `{{retries}}`), downward-API variables
(`fieldRef`) set, output parameters read from the files the task wrote under `/mnt/out` (an
emptyDir), a failed task run again under its `retryStrategy` with the next retry count — and the
container runs as the image's user with no checkout mounted. What a cluster provides and this
machine cannot (the S3 endpoint and credentials, where metadata lives) is passed in as `cluster`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
BASE64_PARAMETER = re.compile(r"^=toBase64\(workflow\.parameters\['([\w-]+)'\]\)$")
DEPENDENCY = re.compile(r"([\w-]+)\.Succeeded")


class UnknownPlaceholder(ValueError):
    """A `{{...}}` this emulation does not fill: a newer Metaflow compiles something Argo does that we do not."""


def fill(text: str, values: dict[str, str], workflow_parameters: dict[str, str]) -> str:
    """`text` with Argo's placeholders replaced; an unknown one is an error, never left in a command."""

    def one(match: re.Match) -> str:
        key = match.group(1)
        if key in values:
            return values[key]
        encoded = BASE64_PARAMETER.match(key)
        if encoded:
            return base64.b64encode(workflow_parameters[encoded.group(1)].encode()).decode()
        raise UnknownPlaceholder(f"{{{{{key}}}}} in {text[:120]!r}")

    return PLACEHOLDER.sub(one, text)


def dependencies(task: dict) -> list[str]:
    """The tasks a DAG task waits for (`depends: "a.Succeeded && b.Succeeded"` or `dependencies: [a, b]`)."""
    return task.get("dependencies") or DEPENDENCY.findall(task.get("depends") or "")


def dag_order(tasks: list[dict]) -> list[dict]:
    """The DAG's tasks in an order where each comes after those it depends on."""
    done: list[str] = []
    ordered = []
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if all(d in done for d in dependencies(t))]
        if not ready:
            raise ValueError(f"DAG has a cycle or a missing task among {[t['name'] for t in pending]}")
        for task in ready:
            ordered.append(task)
            done.append(task["name"])
            pending.remove(task)
    return ordered


def field_value(path: str, pod: dict) -> str:
    """What Kubernetes' downward API gives a container for a `fieldRef`."""
    known = {
        "metadata.name": pod["name"],
        "metadata.namespace": pod["namespace"],
        "metadata.uid": pod["uid"],
        "spec.serviceAccountName": pod["service_account"],
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "spec.nodeName": "image-check",
    }
    if path not in known:
        raise UnknownPlaceholder(f"fieldRef {path}")
    return known[path]


def container_env(container: dict, fill_text: Callable[[str], str], pod: dict) -> dict[str, str]:
    env = {}
    for var in container.get("env") or []:
        source = var.get("valueFrom") or {}
        if var.get("value") is not None:
            env[var["name"]] = fill_text(var["value"])
        elif source.get("fieldRef"):
            env[var["name"]] = field_value(source["fieldRef"]["fieldPath"], pod)
        elif source:
            raise UnknownPlaceholder(f"env {var['name']} from {sorted(k for k, v in source.items() if v)}")
        else:
            env[var["name"]] = ""
    return env


@dataclass
class Attempt:
    """One container run of a task: what ran, how it ended, where its output is."""

    task: str
    template: str
    retry: int
    command: list[str]
    exit_code: int
    seconds: float
    log: Path
    outputs: dict[str, str] = field(default_factory=dict)


class TaskFailed(RuntimeError):
    pass


class Workflow:
    """One submitted workflow of a compiled WorkflowTemplate, its tasks run one at a time in Docker.

    `run_container(argv, env, mounts, log, interrupt)` runs one container and returns its exit code;
    `interrupt(task, template, retry)` may return a callable that decides, while the container
    runs, to kill it (a node lost mid-training).
    """

    def __init__(
        self,
        document: dict,
        parameters: dict,
        cluster: dict[str, str],
        work: Path,
        run_container,
        interrupt=None,
        say=print,
    ):
        self.spec = document["spec"]
        self.templates = {t["name"]: t for t in self.spec["templates"]}
        self.parameters = {p["name"]: p.get("value", "") for p in self.spec.get("arguments", {}).get("parameters", [])}
        self.parameters.update(
            {name: json.dumps(value) for name, value in parameters.items()}
        )  # as `trigger` encodes them
        self.name = f"{document['metadata']['name']}-{secrets.token_hex(3)}"
        self.namespace = document["metadata"].get("namespace", "default")
        self.context = {
            "workflow.name": self.name,
            "workflow.namespace": self.namespace,
            "workflow.creationTimestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.cluster, self.work, self.run_container = cluster, work, run_container
        self.interrupt = interrupt or (lambda task, template, retry: None)
        self.say = say
        self.attempts: list[Attempt] = []

    def run(self) -> list[Attempt]:
        self.run_dag(self.templates[self.spec["entrypoint"]], {})
        return self.attempts

    def run_dag(self, template: dict, inputs: dict[str, str]) -> None:
        outputs: dict[str, dict[str, str]] = {}
        for task in dag_order(template["dag"]["tasks"]):
            values = {**self.context, **{f"inputs.parameters.{k}": v for k, v in inputs.items()}}
            for name, produced in outputs.items():
                values.update({f"tasks.{name}.outputs.parameters.{k}": v for k, v in produced.items()})
            items = json.loads(self.fill(task["withParam"], values)) if "withParam" in task else [None]
            for item in items:
                scope = values if item is None else {**values, "item": str(item)}
                arguments = {
                    p["name"]: self.fill(p.get("value", ""), scope)
                    for p in task.get("arguments", {}).get("parameters", [])
                }
                inner = self.templates[task["template"]]
                if "dag" in inner:
                    self.run_dag(inner, arguments)
                else:
                    outputs[task["name"]] = self.run_task(task["name"], inner, arguments)

    def fill(self, text: str, values: dict[str, str]) -> str:
        return fill(text, values, self.parameters)

    def run_task(self, task: str, template: dict, arguments: dict[str, str]) -> dict[str, str]:
        """The task's container, run again with the next `{{retries}}` while its retryStrategy allows."""
        limit = int((template.get("retryStrategy") or {}).get("limit", 0))
        for retry in range(limit + 1):
            attempt = self.run_once(task, template, arguments, retry)
            self.attempts.append(attempt)
            if attempt.exit_code == 0:
                return attempt.outputs
        raise TaskFailed(
            f"{task}: exit {attempt.exit_code} after {limit + 1} attempt(s); the end of its log "
            f"({attempt.log}):\n" + tail(attempt.log)
        )

    def run_once(self, task: str, template: dict, arguments: dict[str, str], retry: int) -> Attempt:
        pod_name = f"{self.name}-{template['name']}-{secrets.token_hex(4)}"
        pod = {
            "name": pod_name,
            "namespace": self.namespace,
            "uid": str(uuid.uuid4()),
            "service_account": template.get("serviceAccountName", "default"),
        }
        values = {
            **self.context,
            "retries": str(retry),
            "pod.name": pod_name,
            **{f"inputs.parameters.{k}": v for k, v in arguments.items()},
        }
        container = template["container"]
        command = [self.fill(word, values) for word in (container.get("command") or []) + (container.get("args") or [])]
        env = {**container_env(container, lambda text: self.fill(text, values), pod), **self.cluster}
        folder = self.work / pod_name
        mounts = {}
        for mount in container.get("volumeMounts") or []:  # emptyDir volumes: a fresh folder any user may write
            (folder / mount["name"]).mkdir(parents=True)
            (folder / mount["name"]).chmod(0o777)
            mounts[str(folder / mount["name"])] = mount["mountPath"]
        log = folder / "log.txt"
        started = time.time()
        exit_code = self.run_container(
            container["image"],
            command,
            env,
            mounts,
            log,
            pod_name,
            self.interrupt(task, template["name"], retry),
            container.get("resources") or {},
        )
        seconds = time.time() - started
        outputs = {}
        for parameter in (template.get("outputs") or {}).get("parameters", []):
            path = parameter.get("valueFrom", {}).get("path")
            host = next(
                (
                    Path(src) / Path(path).relative_to(dst)
                    for src, dst in mounts.items()
                    if path and path.startswith(dst + "/")
                ),
                None,
            )
            if host and host.exists():
                outputs[parameter["name"]] = host.read_text().strip()
            elif exit_code == 0:
                raise TaskFailed(f"{template['name']}: output {parameter['name']} ({path}) was not written")
        attempt = Attempt(task, template["name"], retry, command, exit_code, seconds, log, outputs)
        self.say(f"{template['name']} (retry {retry}): exit {exit_code} in {seconds:.0f} s")
        return attempt


def tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:])
