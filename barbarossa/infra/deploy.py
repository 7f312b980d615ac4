"""Compiling the flow for an orchestrator, deploying nothing: the one place that does it (tests, image check).

Through Metaflow's own Deployer API — the same config and environment handling as a real deploy — rather than
scraping a `create --only-json` subprocess's output.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

FLOW = Path(__file__).resolve().parents[2] / "flows" / "finetune_flow.py"


def compile_deployment(orchestrator: str, infra: dict, env: dict | None = None, flow: Path = FLOW) -> dict:
    """The document `orchestrator` would be given for `flow` under the `infra` config, deploying nothing.

    `orchestrator` is "argo-workflows" (an Argo WorkflowTemplate) or "step-functions" (an Amazon States Language
    state machine). `env` is added to this process's environment for the compile; the code package is uploaded to
    the datastore it names, as on a real deploy. Raises RuntimeError with the compile's stderr if it fails.
    """
    from metaflow import Deployer

    kind = {"argo-workflows": "argo_workflows", "step-functions": "step_functions"}[orchestrator]
    # The Deployer parses the flow's configs in this process (compute.parse_infra checks the environment), so
    # `env` is this process's environment while it does, not only the create subprocess's.
    with environment(env or {}):
        impl = getattr(Deployer(str(flow), show_output=False, env=env, config_value=[("infra", infra)]), kind)()
        try:
            deployed = impl.create(only_json=True)
            if orchestrator == "argo-workflows":
                return deployed.workflow_template
            # Step Functions: Metaflow 2.19's `step-functions create` writes the Deployer's attribute file before it
            # compiles, without the state machine (its DeployedFlow has no counterpart of Argo's `workflow_template`),
            # and prints the state machine only to stdout. So read it from the stdout of the same create the Deployer
            # ran and captured.
            return json.loads(_output(impl, "stdout"))
        except RuntimeError as err:
            raise RuntimeError(f"{orchestrator} create failed: {err}\n{_output(impl, 'stderr')[-3000:]}") from err
        finally:
            impl.cleanup()


def _output(impl, stream: str) -> str:
    """What the Deployer's subprocess (the create) wrote to `stream`, which it keeps until cleanup; "" if none ran."""
    commands = list(impl.spm.commands.values())
    return Path(commands[-1].log_files[stream]).read_text() if commands else ""


@contextmanager
def environment(env: dict):
    """`env` added to this process's environment for the block; what each key held before (or its absence) after."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
