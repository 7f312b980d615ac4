"""Early stopping and fail-fast on a dev split: the rules, and a real tiny fine-tune that keeps its best adapter."""

import pytest
import torch
from conftest import settings_for, write_jsonl
from safetensors.torch import load_file

from barbarossa.config import EarlyStopping
from barbarossa.data import instructions
from barbarossa.decide import leaderboard
from barbarossa.engine import scoring
from barbarossa.train import early, loop

CFG = {"dev_rows": 6, "eval_every": 1, "patience": 2, "min_delta": 0.01, "fail_fast_steps": 0}
SETTINGS = {
    "max_steps": 8,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "fp32",
    "seed": 0,
    "log_every": 4,
    "checkpoint_every": 0,
}


def run_rule(values, base=3.0, **cfg):
    state, kept = early.new_state(base), []
    for step, bits in enumerate(values, start=1):
        if early.update(state, step, bits, EarlyStopping(**{**CFG, **cfg})):
            kept.append(step)
        if state["stopped"]:
            break
    return state, kept


def test_patience_stops_after_that_many_evaluations_without_a_gain_of_min_delta():
    state, kept = run_rule([2.5, 2.0, 1.995, 2.1, 1.0])  # 1.995 is not a gain of 0.01
    assert kept == [1, 2] and state["stopped"] == "patience" and state["best_step"] == 2
    assert [p["step"] for p in state["curve"]] == [1, 2, 3, 4]  # it never saw step 5
    assert "best 2.000 at step 2" in state["reason"]


def test_fail_fast_stops_a_candidate_no_better_than_its_base_on_dev_once():
    state, _ = run_rule([3.2, 3.1, 3.05], fail_fast_steps=2, patience=0)
    assert state["stopped"] == "fail_fast"
    assert state["reason"] == "no gain on dev after 2 steps: 3.10 vs base 3.00 bits per byte"
    state, _ = run_rule([2.9, 2.8, 2.7], fail_fast_steps=2, patience=0)
    assert state["stopped"] is None  # better than its base: it goes on


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    records = instructions.load(str(instructions.BUNDLED)).records[:60]
    return instructions.prepare(
        str(write_jsonl(out / "train.jsonl", records)),
        None,
        str(out / "run"),
        eval_fraction=0.2,
        dev_rows=CFG["dev_rows"],
    )


def test_the_dev_split_comes_from_the_training_rows_never_the_held_out_ones(split):
    train, dev, held = (instructions.read_jsonl(split[k]) for k in ("train_uri", "dev_uri", "eval_uri"))
    keys = [{(r["instruction"], r["input"]) for r in rows} for rows in (train, dev, held)]
    assert len(dev) == split["dev_rows"] == CFG["dev_rows"]
    assert not keys[0] & keys[1] and not keys[1] & keys[2] and not keys[0] & keys[2]


def item():
    return {
        "name": "tiny-llama-lora",
        "kind": "candidate",
        "base": {"name": "tiny-llama", "source": "tiny:llama", "family": "llama", "max_length": 512},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},
    }


def scripted_dev(monkeypatch, values):
    """Dev bits per byte as scripted (base first), and the LoRA weights the model had at each dev evaluation."""
    values, seen = list(values), []
    real_nll = scoring.response_nll

    def nll(model, *args, **kwargs):
        seen.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n})
        return real_nll(model, *args, **kwargs)

    monkeypatch.setattr(scoring, "response_nll", nll)
    monkeypatch.setattr(scoring, "bits_per_byte", lambda rows: values.pop(0))
    return seen


def test_the_best_evaluation_s_adapter_is_kept_and_evaluated_not_the_last_step_s(split, tmp_path, monkeypatch):
    seen = scripted_dev(monkeypatch, [3.0, 2.6, 2.2, 2.5, 2.7, 2.0])  # base, then steps 1.. (best at step 2)
    trained = loop.train(item(), split, settings_for(item(), {**SETTINGS, **CFG}), str(tmp_path / "out"))
    result = trained.result
    assert result["steps"] == 4 and result["early"]["stopped"] == "patience" and result["early"]["best_step"] == 2
    assert result["gpu_seconds_saved"] > 0 and result["max_steps"] == 8
    best = seen[2]  # [0] is the base (adapter disabled), [k] is after step k
    assert not all(torch.equal(best[n], seen[4][n]) for n in best)  # training moved on after the best step
    saved = load_file(f"{result['adapter_uri']}/adapter_model.safetensors")
    in_memory = {n: p for n, p in trained.model.named_parameters() if "lora_" in n}
    for name, value in best.items():  # the adapter on disk and the model evaluation uses are the best step's
        assert torch.equal(in_memory[name].detach(), value)
        stored = next(v for k, v in saved.items() if name.replace(".default", "").endswith(k.split("base_model.")[-1]))
        assert torch.allclose(stored.float(), value.float())


def test_a_fail_fast_candidate_stops_and_its_row_is_held_with_the_reason(split, tmp_path, monkeypatch):
    scripted_dev(monkeypatch, [3.0, 3.2, 3.1, 3.4])
    cfg = {**SETTINGS, **CFG, "patience": 0, "fail_fast_steps": 2}
    result = loop.train(item(), split, settings_for(item(), cfg), str(tmp_path / "out")).result
    assert result["steps"] == 2 and result["early"]["stopped"] == "fail_fast"
    metrics = {
        "bits_per_byte": 3.1,
        "eval_loss": 2.0,
        "perplexity": 7.4,
        "chrf": 1.0,
        "bleu": 0.1,
        "fidelity": 1.0,
        "degenerate_rate": 0.0,
    }
    base_item = {**item(), "name": "tiny-llama", "kind": "baseline", "lora": None}
    rows = leaderboard.build(
        [leaderboard.task_result(item(), result, metrics), leaderboard.task_result(base_item, None, metrics)]
    )
    row = next(r for r in rows if r["name"] == "tiny-llama-lora")
    assert row["decision"] == "hold" and row["stopped"] == "fail_fast"
    assert row["reasons"] == ["no gain on dev after 2 steps: 3.10 vs base 3.00 bits per byte"]


def test_a_resumed_fine_tune_keeps_its_early_stopping_state(split, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    scripted_dev(monkeypatch, [3.0, 2.6, 2.2, 2.5])
    with pytest.raises(IndexError):  # the script runs dry at step 4: as if the task died there
        loop.train(item(), split, settings_for(item(), {**SETTINGS, **CFG, "checkpoint_every": 1}), out)
    scripted_dev(monkeypatch, [2.1, 2.05, 2.0, 1.9, 1.8])  # no base score again: it comes back from the checkpoint
    result = loop.train(item(), split, settings_for(item(), {**SETTINGS, **CFG, "checkpoint_every": 1}), out).result
    assert result["resumed_from_step"] == 3 and result["early"]["base"] == 3.0
    assert [p["step"] for p in result["early"]["curve"]] == list(range(1, 9)) and result["early"]["best_step"] == 8
