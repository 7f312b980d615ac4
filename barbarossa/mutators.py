"""Metaflow flow mutators: decorators that follow the `infra` config, not code."""

from __future__ import annotations

from metaflow import FlowMutator

from barbarossa import compute


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
