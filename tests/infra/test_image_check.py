"""The orchestrator emulation `make image-check` runs the image with: Argo's and Step Functions' part, done right.

The check itself (containers/image_check.py) needs Docker and runs in `.ci/run` after `make test`; these
tests pin down what it does in Argo's and Batch's place, with a recording runner instead of Docker.
"""

import json
from pathlib import Path

import pytest

from containers import argo, batch


def template(name, command, inputs=(), outputs=(), retries=None):
    t = {
        "name": name,
        "serviceAccountName": "barbarossa",
        "inputs": {"parameters": [{"name": n} for n in inputs]},
        "outputs": {"parameters": [{"name": n, "valueFrom": {"path": f"/mnt/out/{n}"}} for n in outputs]},
        "container": {
            "image": "barbarossa:check",
            "command": ["bash", "-c", command],
            "env": [
                {"name": "RUN", "value": "argo-{{workflow.name}}"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "volumeMounts": [{"name": "out", "mountPath": "/mnt/out"}],
        },
    }
    if retries is not None:
        t["retryStrategy"] = {"limit": retries}
    return t


def workflow_template():
    """Metaflow's shape: start → fan (a foreach over num-splits) → a DAG template per split → join."""
    dag = {
        "name": "Flow",
        "dag": {
            "tasks": [
                {
                    "name": "join",
                    "template": "join",
                    "depends": "fan-foreach.Succeeded",
                    "arguments": {
                        "parameters": [
                            {"name": "input-paths", "value": "x/fan/{{tasks.fan.outputs.parameters.task-id}}"}
                        ]
                    },
                },
                {
                    "name": "fan",
                    "template": "fan",
                    "depends": "start.Succeeded",
                    "arguments": {
                        "parameters": [
                            {"name": "input-paths", "value": "x/start/{{tasks.start.outputs.parameters.task-id}}"}
                        ]
                    },
                },
                {
                    "name": "start",
                    "template": "start",
                    "depends": "",
                    "arguments": {"parameters": [{"name": "input-paths", "value": ""}]},
                },
                {
                    "name": "fan-foreach",
                    "template": "fan-foreach",
                    "depends": "fan.Succeeded",
                    "withParam": "{{tasks.fan.outputs.parameters.num-splits}}",
                    "arguments": {"parameters": [{"name": "split-index", "value": "{{item}}"}]},
                },
            ]
        },
    }
    inner = {
        "name": "fan-foreach",
        "inputs": {"parameters": [{"name": "split-index"}]},
        "dag": {
            "tasks": [
                {
                    "name": "tune",
                    "template": "tune",
                    "arguments": {
                        "parameters": [{"name": "split-index", "value": "{{inputs.parameters.split-index}}"}]
                    },
                }
            ]
        },
    }
    return {
        "metadata": {"name": "barbarossa.finetuneflow", "namespace": "ml"},
        "spec": {
            "entrypoint": "Flow",
            "arguments": {"parameters": [{"name": "profile", "value": json.dumps("cpu")}]},
            "templates": [
                dag,
                inner,
                template("start", "step start --p {{=toBase64(workflow.parameters['profile'])}}", outputs=["task-id"]),
                template(
                    "fan", "step fan --at {{workflow.creationTimestamp}}", ["input-paths"], ["task-id", "num-splits"]
                ),
                template(
                    "tune",
                    "step tune --split {{inputs.parameters.split-index}} --retry {{retries}}",
                    ["split-index"],
                    ["task-id"],
                    retries=2,
                ),
                template("join", "step join --in {{inputs.parameters.input-paths}}", ["input-paths"], ["task-id"]),
            ],
        },
    }


class Recorder:
    """Stands in for Docker: records each container and writes the outputs Metaflow's task would."""

    def __init__(self, fail_first=()):
        self.runs, self.fail_first = [], set(fail_first)

    def __call__(self, image, command, env, mounts, log, name, interrupt, resources):
        self.runs.append({"command": command[-1], "env": env, "name": name})
        step = command[-1].split()[1]
        if step in self.fail_first:
            self.fail_first.discard(step)
            return 137
        out = Path(next(src for src, dst in mounts.items() if dst == "/mnt/out"))
        (out / "task-id").write_text(f"t-{step}")
        if step == "fan":
            (out / "num-splits").write_text("[0, 1]")
        return 0


def test_the_dag_runs_in_dependency_order_with_argo_s_placeholders_filled(tmp_path):
    record = Recorder()
    flow = argo.Workflow(
        workflow_template(),
        {"profile": "smoke"},
        {"METAFLOW_S3_ENDPOINT_URL": "http://s3"},
        tmp_path,
        record,
        say=lambda _: None,
    )
    flow.run()
    commands = [r["command"] for r in record.runs]
    assert [c.split()[1] for c in commands] == ["start", "fan", "tune", "tune", "join"]
    assert (
        commands[0] == "step start --p " + __import__("base64").b64encode(b'"smoke"').decode()
    )  # as `trigger` passes it
    assert commands[1].startswith("step fan --at 20") and commands[1].endswith("Z")
    assert commands[2:4] == ["step tune --split 0 --retry 0", "step tune --split 1 --retry 0"]
    assert commands[4] == "step join --in x/fan/t-fan"
    env = record.runs[0]["env"]
    assert env["RUN"] == f"argo-{flow.name}" and env["POD"] == record.runs[0]["name"]  # the downward API's pod name
    assert env["METAFLOW_S3_ENDPOINT_URL"] == "http://s3" and "{{" not in json.dumps(record.runs)


def test_a_killed_task_runs_again_with_the_next_retry_count(tmp_path):
    record = Recorder(fail_first={"tune"})
    attempts = argo.Workflow(workflow_template(), {}, {}, tmp_path, record, say=lambda _: None).run()
    tunes = [(a.retry, a.exit_code) for a in attempts if a.template == "tune"]
    assert tunes == [(0, 137), (1, 0), (0, 0)]
    assert "--retry 1" in [r["command"] for r in record.runs][3]


def test_a_task_without_retries_fails_the_workflow(tmp_path):
    with pytest.raises(argo.TaskFailed, match="join: exit 137 after 1 attempt"):
        argo.Workflow(workflow_template(), {}, {}, tmp_path, Recorder(fail_first={"join"}), say=lambda _: None).run()


def test_an_unknown_placeholder_is_an_error_not_left_in_a_command():
    with pytest.raises(argo.UnknownPlaceholder, match="steps.x.outputs"):
        argo.fill("echo {{steps.x.outputs.result}}", {}, {})
    with pytest.raises(argo.UnknownPlaceholder, match="fieldRef spec.hostname"):
        argo.field_value("spec.hostname", {"name": "p", "namespace": "n", "uid": "u", "service_account": "s"})


def test_step_functions_paths_resolve_as_step_functions_does():
    data = {"JobId": "j1", "Parameters": {"metaflow.run_id": "r1", "step_name": "fan"}, "all": [{"JobId": "j0"}]}
    context = {"Execution": {"Name": "e1"}, "Map": {"Item": {"Value": "0"}}}
    assert batch.json_path("$.Parameters.['metaflow.run_id']", data, context) == "r1"
    assert batch.json_path("$.all.[0].JobId", data, context) == "j0"
    assert batch.json_path("$$.Execution.Name", data, context) == "e1"
    resolved = batch.resolve(
        {
            "JobId.$": "$.JobId",
            "Index.$": "$$.Map.Item.Value",
            "Fixed": 1,
            "Environment": [{"Name": "METAFLOW_RUN_ID", "Value.$": "$.Parameters.['metaflow.run_id']"}],
        },
        data,
        context,
    )
    assert resolved == {
        "JobId": "j1",
        "Index": "0",
        "Fixed": 1,
        "Environment": [{"Name": "METAFLOW_RUN_ID", "Value": "r1"}],
    }
