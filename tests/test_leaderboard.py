import pytest

from barbarossa import leaderboard

POLICY = {"primary": "eval_loss", "min_loss_improvement": 0.05, "max_chrf_drop": 1.0, "min_fidelity": 0.8,
          "max_degenerate_rate": 0.25}


def result(name, kind, base, loss=None, chrf=None, error=None, fidelity=0.9, loops=0.1):
    item = {"name": name, "kind": kind, "base": {"name": base, "family": "llama"},
            "lora": None if kind == "baseline" else {"r": 8, "alpha": 16, "targets": "attention"}}
    metrics = None if loss is None else {"eval_loss": loss, "perplexity": 2.0, "chrf": chrf, "bleu": 1.0,
                                         "az_fidelity": fidelity, "degenerate_rate": loops, "fertility": 2.5}
    return {"item": item, "train": None, "metrics": metrics, "error": error}


def board():
    return leaderboard.build([
        result("base", "baseline", "base", 3.0, 10.0),
        result("b", "candidate", "base", 2.5, 12.0),
        result("a", "candidate", "base", 2.0, 11.0),
        result("worse-chrf", "candidate", "base", 1.9, 8.0),
        result("tiny-gain", "candidate", "base", 2.98, 15.0),
        result("broken", "candidate", "base", error="ValueError: boom"),
    ], POLICY)


def test_ranks_candidates_by_primary_metric_then_baselines_then_failures():
    rows = board()
    assert [(r["name"], r["rank"]) for r in rows] == [
        ("worse-chrf", 1), ("a", 2), ("b", 3), ("tiny-gain", 4), ("base", None), ("broken", None)
    ]


def test_decisions_and_reasons():
    rows = {r["name"]: r for r in board()}
    assert rows["a"]["decision"] == "release"
    assert rows["a"]["delta_eval_loss"] == pytest.approx(-1.0) and rows["a"]["delta_chrf"] == pytest.approx(1.0)
    assert rows["a"]["reasons"][0].startswith("held-out loss 2.000 vs base 3.000 (-1.000") and "✓" in rows["a"]["reasons"][0]
    assert rows["worse-chrf"]["decision"] == "hold" and "✗" in rows["worse-chrf"]["reasons"][1]
    assert rows["tiny-gain"]["decision"] == "hold" and "✗" in rows["tiny-gain"]["reasons"][0]
    assert rows["broken"]["decision"] == "failed" and rows["broken"]["status"] == "failed"
    assert rows["broken"]["reasons"] == ["failed: ValueError: boom"]
    assert rows["base"]["decision"] == "baseline"


def test_failed_base_holds_its_candidates():
    rows = {r["name"]: r for r in leaderboard.build([
        result("base", "baseline", "base", error="OSError: disk"), result("a", "candidate", "base", 2.0, 11.0),
    ], POLICY)}
    assert rows["a"]["decision"] == "hold" and rows["base"]["decision"] == "failed"


def test_higher_is_better_primary_metric():
    rows = leaderboard.build([
        result("base", "baseline", "base", 3.0, 10.0),
        result("low-loss", "candidate", "base", 2.0, 11.0),
        result("high-chrf", "candidate", "base", 2.5, 14.0),
    ], {**POLICY, "primary": "chrf"})
    assert [r["name"] for r in rows if r["rank"]] == ["high-chrf", "low-loss"]


def test_task_result_turns_caught_failures_into_text():
    class Wrapped:  # the shape of Metaflow's @catch wrapper
        type = "builtins.RuntimeError"
        exception = "loss is nan at step 3"

    out = leaderboard.task_result({"name": "x"}, None, None, None, Wrapped())
    assert out["error"] == "RuntimeError: loss is nan at step 3"
    assert leaderboard.task_result({"name": "x"}, None, {"eval_loss": 1}, None, None)["error"] is None


def test_rows_are_json_serialisable():
    import json

    assert json.loads(json.dumps(board()))[0]["name"] == "worse-chrf"


def test_fidelity_and_degenerate_output_gate_a_release():
    rows = {r["name"]: r for r in leaderboard.build([
        result("base", "baseline", "base", 3.0, 10.0, fidelity=0.5, loops=0.6),
        result("english", "candidate", "base", 2.0, 12.0, fidelity=0.6),
        result("loops", "candidate", "base", 2.0, 12.0, loops=0.5),
        result("good", "candidate", "base", 2.0, 12.0, fidelity=0.95, loops=0.05),
    ], POLICY)}
    assert rows["english"]["decision"] == "hold" and rows["english"]["reasons"][2] == "Azerbaijani answers 60% (needs ≥ 80%) ✗"
    assert rows["loops"]["decision"] == "hold" and rows["loops"]["reasons"][3] == "degenerate answers 50% (may be ≤ 25%) ✗"
    assert rows["good"]["decision"] == "release"
    assert rows["good"]["delta_az_fidelity"] == pytest.approx(0.45) and rows["good"]["delta_degenerate_rate"] == pytest.approx(-0.55)
    assert rows["base"]["delta_az_fidelity"] is None  # baselines are the reference, not compared
