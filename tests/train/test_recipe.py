"""The training recipe end to end on a tiny model: the loss values it records, and a resumed run that matches them.

The values were recorded from this trainer before it became a recipe class (fp32 on the CPU, so no bf16 rounding
and no GPU kernel choice enters): a change to the order of RNG draws, the data stream, the step or the
checkpoints moves them.
"""

import pytest
from conftest import settings_for, write_jsonl

from barbarossa.data import instructions
from barbarossa.engine import runtime
from barbarossa.train import loop

CPU = runtime.Hardware("cpu", "cpu", 24.0, False)  # the CPU path even on a GPU box: the values are the CPU's
SETTINGS = {
    "max_steps": 6,
    "batch_size": 4,
    "grad_accum": 2,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "fp32",
    "share_prefix": False,
    "seed": 0,
    "log_every": 3,
    "checkpoint_every": 3,
}
ITEM = {
    "name": "tiny-llama",
    "kind": "candidate",
    "base": {"name": "llama", "source": "tiny:llama", "family": "llama", "max_length": 512},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},
}
# the flow's `train` artifact: the leaderboard, history, release and the cards read these keys, old runs' included
ARTIFACT_KEYS = [
    "adapter_uri",
    "loss_curve",
    "steps",
    "resumed_from_step",
    "micro_batch",
    "grad_accum",
    "oom_backoffs",
    "supervised_tokens",
    "real_tokens",
    "loop_seconds",
    "computed_per_real_token",
    "tokens_per_second",
    "train_seconds",
    "precision",
    "layout",
    "device",
    "runtime",
    "compiled_layers",
    "peak_gpu_gb",
    "trainable_params",
    "train_examples",
    "dropped_too_long",
    "max_steps",
    "early",
    "gpu_seconds_saved",
]
RECORDED_LOSSES = [7.63103, 7.63171, 7.61216, 7.59291, 7.57987, 7.58188]  # recorded before the refactor


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    records = instructions.load(str(instructions.BUNDLED)).records[:40]
    return instructions.prepare(
        str(write_jsonl(out / "train.jsonl", records)), None, str(out / "run"), eval_fraction=0.2
    )


def losses(result: dict) -> list[float]:
    return [point["loss"] for point in result["loss_curve"]]


def test_a_short_run_records_the_expected_loss_values(tmp_path, split):
    trained = loop.train(ITEM, split, settings_for(ITEM, SETTINGS), str(tmp_path / "out"), hardware=CPU)
    result = trained.result
    assert [point["step"] for point in result["loss_curve"]] == list(range(1, 7))
    assert losses(result) == pytest.approx(RECORDED_LOSSES, abs=1e-4)
    assert list(result) == ARTIFACT_KEYS and result == trained.outcome.as_dict()
    result["loss_curve"].clear()  # the artifact is a copy: the typed result stays as it was
    assert len(trained.outcome.loss_curve) == 6 and trained.outcome.steps == 6 and trained.outcome.early is None


def test_the_stages_run_on_their_own(tmp_path, split):
    recipe = loop.LoraRecipe(ITEM, split, settings_for(ITEM, SETTINGS), str(tmp_path / "out"), hardware=CPU)
    recipe.setup()
    assert (recipe.layout, recipe.micro, recipe.resumed_from, recipe.watch) == ("packed", 4, 0, None)
    assert round(recipe.step(0), 5) == pytest.approx(RECORDED_LOSSES[0], abs=1e-4)
    assert recipe.progress["step"] == 1 and recipe.progress["supervised_tokens"] > 0


class Killed(Exception):
    """Stands in for the task dying right after the step-3 checkpoint."""


def test_a_run_resumed_from_its_checkpoint_records_the_same_loss_values(tmp_path, split):
    def die_at_3(step, curve, **_):
        if step == 3:
            raise Killed

    out = str(tmp_path / "out")
    with pytest.raises(Killed):
        loop.train(ITEM, split, settings_for(ITEM, SETTINGS), out, on_log=die_at_3, hardware=CPU)
    resumed = loop.train(ITEM, split, settings_for(ITEM, SETTINGS), out, hardware=CPU).result
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 6
    assert losses(resumed) == pytest.approx(RECORDED_LOSSES, abs=1e-4)
