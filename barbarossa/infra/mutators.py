"""Metaflow flow mutators: decorators that follow the `infra` config, not code."""

from __future__ import annotations

from metaflow import FlowMutator

from barbarossa.config import PROJECT_ROOT
from barbarossa.infra import compute


class FollowInfra(FlowMutator):
    """Decorators that follow the `infra` config: boxes, compute backend, secrets, event trigger.

    Runs when the flow is loaded (for `run`, and when compiling to Argo
    Workflows or Step Functions), after the `infra` Config is read:
    - each `tune_<class>` step gets the @resources and @timeout its roster
      entries need (the roster entries of the infra config's `models`), and
      `release` the largest of those boxes (merging loads a base on a GPU);
    - with compute = kubernetes / batch every step gets @kubernetes / @batch
      (image, namespace, node selectors, queue, ...), so flow code carries
      @resources only and still runs locally;
    - `secrets` become @secrets on the steps that touch the Hub (tune, release);
    - `trigger_event` becomes a flow-level @trigger (Argo only: Step Functions refuses it).
    """

    def pre_mutate(self, mutable_flow):
        infra = compute.validate_infra(mutable_flow.infra.to_dict())
        boxes = compute.deployed_boxes(infra)
        for cls, box in boxes.items():
            step = getattr(mutable_flow, f"tune_{cls}")
            step.add_decorator("resources", deco_kwargs=compute.resources_kwargs(box), duplicates=step.OVERRIDE)
            step.add_decorator("timeout", deco_kwargs=compute.timeout_kwargs(box), duplicates=step.OVERRIDE)
        release = mutable_flow.release
        release.add_decorator(
            "resources", deco_kwargs=compute.resources_kwargs(compute.release_box(boxes)), duplicates=release.OVERRIDE
        )
        for name, step in mutable_flow.steps:
            backend = compute.compute_decorator(infra, name.removeprefix("tune_") if name.startswith("tune_") else None)
            if backend:
                step.add_decorator(backend[0], deco_kwargs=backend[1], duplicates=step.OVERRIDE)
            if infra.get("secrets") and (name.startswith("tune_") or name == "release"):
                step.add_decorator("secrets", deco_kwargs={"sources": infra["secrets"]}, duplicates=step.OVERRIDE)
        if infra.get("trigger_event"):
            # the translate flow's event carries the new dataset: it becomes this run's --train-data
            event = {"name": infra["trigger_event"], "parameters": {"train-data": "dataset_uri"}}
            mutable_flow.add_decorator("trigger", deco_kwargs={"event": event})


class ShipLibrary(FlowMutator):
    """Put the `barbarossa` package, its configs and the bundled data into the flow's code package.

    Metaflow packages only what sits beside the flow file; without this a remote
    task (Kubernetes, Batch, Argo, Step Functions) would import whatever
    `barbarossa` its image happens to hold — or none. With it, every task runs
    the library of the commit that launched the run.
    """

    def add_to_package(self):
        from metaflow.packaging_sys import ContentType

        for path in shipped_files():
            yield str(path), str(path.relative_to(PROJECT_ROOT)), ContentType.CODE_CONTENT


def shipped_files():
    """The library's sources and the data files it reads at run time (all under the project root; the GPU checks
    calibrate the plan's MFU)."""
    for pattern in (
        "barbarossa/**/*.py",
        "configs/**/*.toml",
        "data/*.jsonl",
        "data/benchmarks/**/*.*",
        "benchmarks/results/gpu-check-*.json",
    ):
        yield from sorted(PROJECT_ROOT.glob(pattern))
