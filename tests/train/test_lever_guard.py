"""The first-step guard: a speed lever that fails while a task runs is turned off, and the fine-tune goes on.

Each lever is forced on this CPU and made to fail the way it would on a GPU: FlexAttention really has no
backward on a CPU; the compiler, Liger's kernels and the master weights fail by injection, each raising from
its own code. The row (the train result's `runtime`) keeps the fallback and its reason.
"""

import dataclasses
import math
import textwrap

import pytest
import torch
from conftest import settings_for, write_jsonl

from barbarossa.data import instructions
from barbarossa.engine import kernels
from barbarossa.planning import plan
from barbarossa.train import loop, master

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"}
ITEM = {
    "name": "tiny-llama-lora",
    "kind": "candidate",
    "lora": LORA,
    "base": {"name": "tiny-llama", "source": "tiny:llama", "family": "llama", "max_length": 2048},
}
TRAIN = {
    "max_steps": 2,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "max_length": 128,
    "precision": "fp32",
    "log_every": 1,
    "share_prefix": False,
}


@pytest.fixture
def split(tmp_path):
    rows = instructions.load("bundled").records[:16]
    return {"train_uri": str(write_jsonl(tmp_path / "train.jsonl", rows)), "train_fingerprint": "guard-test"}


def finetune(split, out, **train):
    return loop.train(ITEM, split, settings_for(ITEM, {**TRAIN, **train}), str(out))


def assert_went_on_without(trained, lever: str, because: str) -> dict:
    """The fine-tune finished every step with `lever` off, and its row says which error turned it off."""
    result = trained.result
    assert result["steps"] == TRAIN["max_steps"]
    assert all(math.isfinite(point["loss"]) for point in result["loss_curve"])
    assert set(result["runtime"]["fallbacks"]) == {lever}
    assert because in result["runtime"]["fallbacks"][lever]
    return result["runtime"]


def test_flex_attention_that_cannot_run_backward_falls_back_to_sdpa(split, tmp_path, capsys):
    trained = finetune(split, tmp_path / "out", attention="flex_attention")  # no FlexAttention backward on a CPU
    record = assert_went_on_without(trained, "attention", "NotImplementedError")
    assert record["attention"] == "sdpa"
    assert "attention failed at the first step" in capsys.readouterr().out


def test_a_compile_error_turns_compile_off_and_keeps_the_other_levers(split, tmp_path, monkeypatch):
    def refusing_backend(graph, inputs):
        raise RuntimeError("injected: the backend cannot compile this graph")

    def compile_with_a_failing_backend(model):
        layers = kernels.decoder_layers(model)
        for layer in layers:
            layer.compile(backend=refusing_backend)
        return len(layers)

    monkeypatch.setattr(kernels, "compile_layers", compile_with_a_failing_backend)
    trained = finetune(split, tmp_path / "out", compile=True, precision="bf16", adapter_dtype="bf16")
    record = assert_went_on_without(trained, "compile", "injected: the backend cannot compile")
    assert record["compiled"] is False and trained.result["compiled_layers"] == 0
    assert record["master_weights"] is True and record["adapter_dtype"] == "bf16"  # not to blame: still on


def test_a_failing_liger_kernel_turns_the_kernels_off(split, tmp_path, monkeypatch):
    package = tmp_path / "site" / "liger_kernel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "transformers.py").write_text(
        textwrap.dedent(
            """
            import torch


            def _failing_rms_norm(self, hidden):
                raise RuntimeError("injected: Triton kernel launch failed")


            def apply_liger_kernel_to_llama(model=None, **switches):
                for module in model.modules():
                    if type(module).__name__.endswith("RMSNorm"):
                        module.forward = _failing_rms_norm.__get__(module)


            class LigerFusedLinearCrossEntropyLoss(torch.nn.Module):
                def __init__(self, reduction="mean"):
                    super().__init__()
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    decided = plan.decision_for_item
    monkeypatch.setattr(
        plan, "decision_for_item", lambda *args: dataclasses.replace(decided(*args), kernels="liger")
    )  # a CUDA box's decision: this CPU refuses kernels = "liger" by name
    trained = finetune(split, tmp_path / "out")
    record = assert_went_on_without(trained, "kernels", "injected: Triton kernel launch failed")
    assert record["kernels"] == "torch"


def test_master_weights_that_fail_turn_bf16_adapters_off(split, tmp_path, monkeypatch):
    built = master.MasterWeights.__init__

    def with_a_broken_gradient_buffer(self, *args, **kwargs):
        built(self, *args, **kwargs)
        self.flat_grad = torch.zeros(3, dtype=self.flat_grad.dtype)  # accumulate() now fails inside master.py

    monkeypatch.setattr(master.MasterWeights, "__init__", with_a_broken_gradient_buffer)
    trained = finetune(split, tmp_path / "out", precision="bf16", adapter_dtype="bf16")
    record = assert_went_on_without(trained, "adapter_dtype", "RuntimeError")
    assert (record["adapter_dtype"], record["master_weights"]) == ("fp32", False)


def test_an_error_no_lever_caused_is_raised_at_once_without_a_retry(split, tmp_path, monkeypatch):
    decisions = []
    decided = plan.decision_for_item
    monkeypatch.setattr(plan, "decision_for_item", lambda *args: decisions.append(1) or decided(*args))
    with pytest.raises(ValueError, match="no training example fits max_length=8"):
        finetune(split, tmp_path / "out", precision="bf16", adapter_dtype="bf16", max_length=8)
    assert len(decisions) == 1
