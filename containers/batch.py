"""Run a compiled Step Functions state machine's Batch jobs in Docker the way AWS Batch runs them.

Metaflow compiles each step to a `batch:submitJob.sync` state: a job definition (registered on the
Batch API, here moto's) and container overrides whose values are Step Functions JSONPaths into the
state's input (`$.JobId` of the parent job, `$.Parameters['metaflow.run_id']`, a foreach `$.Index`).
`run_until` walks the states from the start to a given step along the first branch and first split,
resolving those paths as Step Functions does, reading the foreach cardinality from DynamoDB as the
state machine does, and runs each job's container with what Batch adds: `AWS_BATCH_JOB_ID`,
`AWS_BATCH_JOB_ATTEMPT`, `AWS_BATCH_JQ_NAME`, `AWS_BATCH_CE_NAME`, `AWS_EXECUTION_ENV`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import boto3

AWS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def batch_world(endpoint: str, table: str = "barbarossa-foreach") -> str:
    """What `step-functions create` and its tasks use on AWS, created on the local moto server; the IAM role ARN."""
    kw = {"endpoint_url": endpoint, **AWS}
    iam = boto3.client("iam", **kw)
    role = iam.create_role(RoleName="barbarossa-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="barbarossa-batch")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="barbarossa-batch", RoleName="barbarossa-batch")
    ec2 = boto3.client("ec2", **kw)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="batch", Description="batch", VpcId=vpc)["GroupId"]
    batch = boto3.client("batch", **kw)
    environment = batch.create_compute_environment(
        computeEnvironmentName="gpu",
        type="MANAGED",
        state="ENABLED",
        serviceRole=role,
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 64,
            "instanceTypes": ["p4d.24xlarge"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        },
    )["computeEnvironmentArn"]
    batch.create_job_queue(
        jobQueueName="barbarossa-gpu",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment}],
    )
    boto3.client("dynamodb", **kw).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pathspec", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pathspec", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return role


def all_states(states: dict) -> dict:
    """Every state of a definition, those inside Parallel branches and Map iterators included."""
    found = {}
    for name, state in states.items():
        found[name] = state
        for inner in [state.get("Iterator", {})] + state.get("Branches", []):
            found.update(all_states(inner.get("States", {})))
    return found


PATH_TOKEN = re.compile(r"\['([^']+)'\]|\[(\d+)\]|([^.\[\]]+)")


def json_path(path: str, data, context: dict):
    """The value a Step Functions path names: `$.a.b`, `$.Parameters.['k']`, `$.[0].JobId`, `$$.Execution.Name`."""
    if path.startswith("$$."):
        data, rest = context, path[3:]
    elif path.startswith("$"):
        rest = path[1:]
    else:
        raise ValueError(f"not a path: {path}")
    for quoted, index, plain in PATH_TOKEN.findall(rest):
        data = data[int(index)] if index else data[quoted or plain]
    return data


def resolve(template, data, context: dict):
    """A Parameters block with each `"key.$": path` replaced by `"key": value`."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = json_path(value, data, context)
            else:
                out[key] = resolve(value, data, context)
        return out
    if isinstance(template, list):
        return [resolve(v, data, context) for v in template]
    return template


def run_job(
    state: dict, data: dict, context: dict, endpoint: str, cluster: dict, work: Path, run_container, say=print
) -> dict:
    """One submitJob.sync state as Batch runs it; returns what the state outputs (the job's JobId and Parameters)."""
    parameters = resolve(state["Parameters"], data, context)
    definition = boto3.client("batch", endpoint_url=endpoint, **AWS).describe_job_definitions(
        jobDefinitions=[parameters["JobDefinition"]]
    )["jobDefinitions"][0]
    container = definition["containerProperties"]
    overrides = parameters.get("ContainerOverrides", {})
    env = {e["name"]: e["value"] for e in container.get("environment", [])}
    env.update({e["Name"]: str(e["Value"]) for e in overrides.get("Environment", [])})
    job_id = str(uuid.uuid4())
    client = boto3.client("batch", endpoint_url=endpoint, **AWS)
    queue = client.describe_job_queues(jobQueues=[parameters["JobQueue"]])["jobQueues"][0]
    env.update(
        {
            "AWS_BATCH_JOB_ID": job_id,
            "AWS_BATCH_JOB_ATTEMPT": "1",
            "AWS_BATCH_JQ_NAME": queue["jobQueueName"],
            "AWS_BATCH_CE_NAME": queue["computeEnvironmentOrder"][0]["computeEnvironment"].split("/")[-1],
            "AWS_EXECUTION_ENV": "AWS_ECS_EC2",
        }
    )  # what Batch (on ECS) sets in every job's container
    env.update(cluster)
    command = overrides.get("Command") or container.get("command") or []
    step = parameters["Parameters"]["step_name"]
    log = work / f"{step}-{job_id}" / "log.txt"
    started = time.time()
    exit_code = run_container(container["image"], command, env, {}, log, f"batch-{step}-{job_id[:8]}", None, {})
    say(f"{step} (Batch job {job_id[:8]}, attempt 1): exit {exit_code} in {time.time() - started:.0f} s")
    if exit_code != 0:
        ending = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"Batch job {step} failed (exit {exit_code}); the end of its log ({log}):\n{ending}")
    return {"JobId": job_id, "Parameters": parameters["Parameters"], "log": log}


def run_until(
    definition: dict,
    last_step: str,
    endpoint: str,
    parameters: dict,
    cluster: dict,
    work: Path,
    run_container,
    say=print,
) -> list[dict]:
    """Run the jobs from `start` to `last_step`: the first branch of each split, every split of the foreach that
    holds `last_step` (in the tiny roster: the untuned base and the candidate, so a job really trains)."""
    states = all_states(definition["States"])
    context = {"Execution": {"Name": f"check-{uuid.uuid4().hex[:8]}"}}
    done: list[dict] = []

    def walk(name: str, data: dict) -> bool:
        """Follow the states from `name`; true once `last_step` ran."""
        while True:
            state = states[name]
            if state["Type"] == "Task" and state["Resource"].startswith("arn:aws:states:::batch:"):
                output = run_job(state, data, context, endpoint, cluster, work, run_container, say)
                done.append(output)
                if name == last_step:
                    return True
                data, name = {k: v for k, v in output.items() if k != "log"}, state["Next"]
            elif state["Type"] == "Parallel":
                name = state["Branches"][0]["StartAt"]
            elif state["Type"] == "Task" and "dynamodb:getItem" in state["Resource"]:
                item = boto3.client("dynamodb", endpoint_url=endpoint, **AWS).get_item(
                    **resolve(state["Parameters"], data, context)
                )
                data, name = {**data, "Result": item}, state["Next"]
            elif state["Type"] == "Map":
                reached = False
                for value in json_path(state["ItemsPath"], data, context):
                    split = resolve(state["Parameters"], data, {**context, "Map": {"Item": {"Value": value}}})
                    reached = walk(state["Iterator"]["StartAt"], split) or reached
                    if not reached:
                        break  # this foreach does not lead to last_step: one split is enough to pass it
                if reached:
                    return True
                raise ValueError(f"{last_step} is not reachable along the first branch")
            else:
                raise ValueError(f"state {name} of type {state['Type']} is not one this check runs")

    walk(definition["StartAt"], {"Parameters": json.dumps(parameters)})  # the input `step-functions trigger` gives
    return done
