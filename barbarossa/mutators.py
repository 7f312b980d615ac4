"""Metaflow flow mutators: decorators that follow the `infra` config, not code."""

from __future__ import annotations

from metaflow import FlowMutator

from barbarossa import compute
from barbarossa.registry import PROJECT_ROOT


class SizeClassResources(FlowMutator):
    """Give each `tune_<class>` step the @resources and @timeout its roster entries need.

    Runs when the flow is loaded (for `run`, and when compiling to Argo
    Workflows or Step Functions), after the `infra` Config is read: the boxes
    come from the roster entries of the infra config's `models` selection.
    """

    def pre_mutate(self, mutable_flow):
        infra = compute.validate_infra(dict(mutable_flow.infra))
        for cls, box in compute.deployed_boxes(infra).items():
            step = getattr(mutable_flow, f"tune_{cls}")
            step.add_decorator("resources", deco_kwargs=compute.resources_kwargs(box), duplicates=step.OVERRIDE)
            step.add_decorator("timeout", deco_kwargs=compute.timeout_kwargs(box), duplicates=step.OVERRIDE)


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
    """The library's sources and the data files it reads at run time (all under the project root)."""
    for pattern in ("barbarossa/**/*.py", "configs/**/*.toml", "data/*.jsonl"):
        yield from sorted(PROJECT_ROOT.glob(pattern))
