"""Out-of-memory back-off: a step that runs out of memory is redone with half the micro-batch, same effective batch.

A CPU cannot run out of memory on cue, so the model's forward is wrapped to
raise torch.OutOfMemoryError (after running, as a real OOM in the backward
would leave a graph behind) whenever its micro-batch holds more than K examples:
from the first batch on, or only later, when part of a step's gradient is in.
"""

import pytest
import torch
from conftest import finetune, write_jsonl

from barbarossa.data import instructions
from barbarossa.decide import leaderboard
from barbarossa.planning import plan
from barbarossa.train import loop

SETTINGS = {
    "max_steps": 2,
    "batch_size": 4,
    "grad_accum": 2,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "auto",
    "seed": 0,
    "log_every": 100,
}
ITEM = {
    "name": "tiny-llama",
    "kind": "candidate",
    "base": {"name": "llama", "source": "tiny:llama", "family": "llama", "max_length": 512},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},
}
LAYOUTS = {"shared-prefix": {}, "packed": {"share_prefix": False}, "padded": {"share_prefix": False, "packing": False}}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    records = instructions.load(str(instructions.BUNDLED)).records[:40]
    return instructions.prepare(
        str(write_jsonl(out / "train.jsonl", records)), None, str(out / "run"), eval_fraction=0.2
    )


def run_out_of_memory_above(monkeypatch, limit: int, from_batch: int = 1):
    """Make model forwards raise an out-of-memory error while the micro-batch has more than `limit` examples,
    from the `from_batch`-th micro-batch on (memory that runs short mid-run)."""
    seen = {"examples": 0, "batches": 0}
    make_batch, load = loop.make_batch, plan.load_for_item

    def counting_make_batch(layout, examples, *args, **kwargs):
        seen["examples"], seen["batches"] = len(examples), seen["batches"] + 1
        return make_batch(layout, examples, *args, **kwargs)

    def loading_with_a_memory_limit(*args, **kwargs):
        tokenizer, model, decision = load(*args, **kwargs)
        forward = model.forward

        def limited(*a, **k):
            out = forward(*a, **k)
            if seen["examples"] > limit and seen["batches"] >= from_batch:
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate 2.00 GiB ({seen['examples']} rows)"
                )
            return out

        model.forward = limited  # peft's wrapper calls the base model's forward through the instance
        return tokenizer, model, decision

    monkeypatch.setattr(loop, "make_batch", counting_make_batch)
    monkeypatch.setattr(plan, "load_for_item", loading_with_a_memory_limit)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(
    tmp_path, split, monkeypatch, layout, fp32_cpu
):
    from safetensors.torch import load_file

    cfg = {**SETTINGS, **LAYOUTS[layout]}
    straight = finetune(ITEM, split, cfg, str(tmp_path / "straight"))
    assert (straight["micro_batch"], straight["grad_accum"], straight["oom_backoffs"]) == (4, 2, 0)

    run_out_of_memory_above(monkeypatch, 1, from_batch=4)  # step 2's second batch: its first one's gradient is in
    squeezed = finetune(ITEM, split, cfg, str(tmp_path / "squeezed"))
    assert squeezed["layout"] == layout
    assert (squeezed["micro_batch"], squeezed["grad_accum"], squeezed["oom_backoffs"]) == (1, 8, 2)  # 4 → 2 → 1
    assert squeezed["micro_batch"] * squeezed["grad_accum"] == cfg["batch_size"] * cfg["grad_accum"]
    assert [p["step"] for p in squeezed["loss_curve"]] == [1, 2]  # the interrupted step is redone, not added
    assert squeezed["supervised_tokens"] == straight["supervised_tokens"]  # and its tokens are counted once
    assert [p["loss"] for p in squeezed["loss_curve"]] == pytest.approx(
        [p["loss"] for p in straight["loss_curve"]], abs=1e-4
    )
    a = load_file(tmp_path / "squeezed" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    row = leaderboard.base_row({"item": ITEM, "train": squeezed, "metrics": {"eval_loss": 1.0}})
    assert row["micro_batch"] == 1


def test_out_of_memory_at_a_micro_batch_of_one_fails_the_row_with_a_clear_reason(tmp_path, split, monkeypatch):
    run_out_of_memory_above(monkeypatch, 0)
    with pytest.raises(
        loop.TrainingOutOfMemory, match=r"out of memory at micro-batch 1 \(started at 4\) on cpu"
    ) as caught:
        finetune(ITEM, split, SETTINGS, str(tmp_path / "out"))
    error = leaderboard.task_result(ITEM, None, None, caught.value, stage="finetune")["error"]
    assert error.startswith("finetune failed: TrainingOutOfMemory: tiny-llama: out of memory at micro-batch 1")
    assert "CUDA out of memory" in error and "step 1" in error


def test_only_out_of_memory_errors_count_as_such():
    assert loop.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert loop.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"))
    assert not loop.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not loop.is_out_of_memory(ValueError("out of memory"))
