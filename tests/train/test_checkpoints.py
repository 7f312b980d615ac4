"""Checkpoints that survive a bad file: verified by size and sha256, the previous one kept as a fallback."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from conftest import finetune, latest_step, write_jsonl

from barbarossa.data import instructions
from barbarossa.train import checkpoints


def tiny_run(out: str, steps: int):
    """A Linear model and AdamW, checkpointed after each of `steps` steps; the weights at each step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    weights = {}
    for step in range(1, steps + 1):
        model(torch.randn(2, 4)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        checkpoints.save(out, model, optimizer, {"step": step, "curve": [step]})
        weights[step] = model.weight.detach().clone()
    return weights


def fresh():
    model = torch.nn.Linear(4, 3)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def ckpt(out, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step:06d}.pt"


def flip_a_byte(path: Path) -> None:
    """Same size, one byte of tensor data changed: torch.load still reads it, only the hash can tell."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_the_marker_keeps_the_latest_two_with_their_hashes(tmp_path):
    out = str(tmp_path)
    tiny_run(out, 3)
    marker = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert [e["step"] for e in marker["checkpoints"]] == [3, 2] and marker["step"] == 3
    assert all(
        len(e["sha256"]) == 64 and e["size"] == ckpt(out, e["step"]).stat().st_size for e in marker["checkpoints"]
    )
    assert not ckpt(out, 1).exists() and ckpt(out, 2).exists() and latest_step(out) == 3


@pytest.mark.parametrize(
    "damage, why",
    [
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated", id="truncated"),
        pytest.param(flip_a_byte, "corrupt", id="corrupt"),
        pytest.param(lambda p: p.unlink(), "missing", id="missing"),
    ],
)
def test_a_bad_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, why):
    out = str(tmp_path)
    weights = tiny_run(out, 3)
    damage(ckpt(out, 3))
    model, optimizer = fresh()
    with pytest.warns(checkpoints.CheckpointWarning, match=rf"step-000003\.pt \(step 3\) is {why}.*from step 2"):
        progress = checkpoints.restore(out, model, optimizer)
    assert progress["step"] == 2 and torch.equal(model.weight, weights[2])
    assert latest_step(out) == 2  # the marker no longer points at the bad file
    checkpoints.save(out, model, optimizer, {"step": 3, "curve": []})
    assert [e["step"] for e in json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["checkpoints"]] == [
        3,
        2,
    ]


def test_both_checkpoints_bad_means_a_clean_start_with_a_warning(tmp_path):
    out = str(tmp_path)
    tiny_run(out, 3)
    flip_a_byte(ckpt(out, 3))
    flip_a_byte(ckpt(out, 2))
    model, optimizer = fresh()
    before = model.weight.detach().clone()
    with pytest.warns(checkpoints.CheckpointWarning) as caught:
        assert checkpoints.restore(out, model, optimizer) is None
    messages = [str(w.message) for w in caught]
    assert any("step-000003.pt" in m and "corrupt" in m for m in messages)
    assert any("step-000002.pt" in m and "starting from step 0" in m for m in messages)
    assert torch.equal(model.weight, before) and latest_step(out) == 0


def test_an_old_marker_without_hashes_still_loads(tmp_path):
    out = str(tmp_path)
    weights = tiny_run(out, 1)
    (tmp_path / "checkpoints" / "latest.json").write_text(json.dumps({"step": 1, "uri": str(ckpt(out, 1))}))
    model, optimizer = fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpoints.restore(out, model, optimizer)["step"] == 1
    assert torch.equal(model.weight, weights[1])
    ckpt(out, 1).write_bytes(b"not a checkpoint")  # no hash to check: torch.load failing is caught all the same
    with pytest.warns(checkpoints.CheckpointWarning, match="unreadable"):
        assert checkpoints.restore(out, *fresh()) is None


SETTINGS = {
    "max_steps": 6,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "auto",
    "seed": 0,
    "log_every": 3,
    "checkpoint_every": 3,
}
DROPPING = {
    "name": "tiny-llama",
    "kind": "candidate",
    "base": {"name": "llama", "source": "tiny:llama", "family": "llama", "max_length": 512},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "targets": "attention"},
}


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    records = instructions.load(str(instructions.BUNDLED)).records[:24]
    return instructions.prepare(
        str(write_jsonl(out / "train.jsonl", records)), None, str(out / "run"), eval_fraction=0.2
    )


class Killed(Exception):
    """Stands in for a kill right after a checkpoint."""


def test_a_resumed_run_with_lora_dropout_matches_an_uninterrupted_one(tmp_path, split):
    """Dropout draws from the RNG: the resumed run matches only if the checkpoint's RNG state is restored."""
    from safetensors.torch import load_file

    straight = finetune(DROPPING, split, SETTINGS, str(tmp_path / "straight"))

    def kill_at_3(step, curve):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        finetune(DROPPING, split, SETTINGS, str(tmp_path / "resumed"), on_log=kill_at_3)
    torch.manual_seed(1234)  # whatever the RNG holds now must not matter
    resumed = finetune(DROPPING, split, SETTINGS, str(tmp_path / "resumed"))
    assert resumed["resumed_from_step"] == 3 and [p["step"] for p in resumed["loss_curve"]] == list(range(1, 7))
    assert [p["loss"] for p in resumed["loss_curve"]] == pytest.approx(
        [p["loss"] for p in straight["loss_curve"]], abs=1e-5
    )
    a = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
