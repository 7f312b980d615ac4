import json
import math
from functools import cache

import numpy as np
import pytest

from barbarossa import config
from barbarossa.config import Policy
from barbarossa.decide import leaderboard
from barbarossa.evaluate import protocol, stats

# Rows without per-row numbers: every check falls back to the point estimate (and says so).
POLICY = Policy(primary="eval_loss", min_gain=0.05, max_chrf_drop=1.0, min_fidelity=0.8, max_degenerate_rate=0.25)


def result(name, kind, base, loss=None, chrf=None, error=None, fidelity=0.9, loops=0.1):
    item = {
        "name": name,
        "kind": kind,
        "base": {"name": base, "family": "llama"},
        "lora": None if kind == "baseline" else {"r": 8, "alpha": 16, "targets": "attention"},
    }
    metrics = (
        None
        if loss is None
        else {
            "eval_loss": loss,
            "perplexity": 2.0,
            "chrf": chrf,
            "bleu": 1.0,
            "fidelity": fidelity,
            "degenerate_rate": loops,
            "fertility": 2.5,
        }
    )
    return {"item": item, "train": None, "metrics": metrics, "error": error}


def board():
    return leaderboard.build(
        [
            result("base", "baseline", "base", 3.0, 10.0),
            result("b", "candidate", "base", 2.5, 12.0),
            result("a", "candidate", "base", 2.0, 11.0),
            result("worse-chrf", "candidate", "base", 1.9, 8.0),
            result("tiny-gain", "candidate", "base", 2.98, 15.0),
            result("broken", "candidate", "base", error="ValueError: boom"),
        ],
        POLICY,
    )


def test_ranks_candidates_by_primary_metric_then_baselines_then_failures():
    rows = board()
    assert [(r["name"], r["rank"]) for r in rows] == [
        ("worse-chrf", 1),
        ("a", 2),
        ("b", 3),
        ("tiny-gain", 4),
        ("base", None),
        ("broken", None),
    ]


def test_decisions_and_reasons():
    rows = {r["name"]: r for r in board()}
    assert rows["a"]["decision"] == "release"
    assert rows["a"]["delta_eval_loss"] == pytest.approx(-1.0) and rows["a"]["delta_chrf"] == pytest.approx(1.0)
    assert rows["a"]["reasons"][0] == (
        "held-out loss 2.000 vs base 3.000: -1.000 (needs ≤ -0.050), point estimate only (no paired per-row data) ✓"
    )
    assert rows["a"]["eval_loss_ci"] is None and rows["a"]["delta_eval_loss_p"] is None
    assert rows["worse-chrf"]["decision"] == "hold" and "✗" in rows["worse-chrf"]["reasons"][1]
    assert rows["tiny-gain"]["decision"] == "hold" and "✗" in rows["tiny-gain"]["reasons"][0]
    assert rows["broken"]["decision"] == "failed" and rows["broken"]["status"] == "failed"
    assert rows["broken"]["reasons"] == ["failed: ValueError: boom"]
    assert rows["base"]["decision"] == "baseline"


def test_failed_base_holds_its_candidates():
    rows = {
        r["name"]: r
        for r in leaderboard.build(
            [
                result("base", "baseline", "base", error="OSError: disk"),
                result("a", "candidate", "base", 2.0, 11.0),
            ],
            POLICY,
        )
    }
    assert rows["a"]["decision"] == "hold" and rows["base"]["decision"] == "failed"


def test_higher_is_better_primary_metric():
    rows = leaderboard.build(
        [
            result("base", "baseline", "base", 3.0, 10.0),
            result("low-loss", "candidate", "base", 2.0, 11.0),
            result("high-chrf", "candidate", "base", 2.5, 14.0),
        ],
        POLICY.replace(primary="chrf"),
    )
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
    rows = {
        r["name"]: r
        for r in leaderboard.build(
            [
                result("base", "baseline", "base", 3.0, 10.0, fidelity=0.5, loops=0.6),
                result("english", "candidate", "base", 2.0, 12.0, fidelity=0.6),
                result("loops", "candidate", "base", 2.0, 12.0, loops=0.5),
                result("good", "candidate", "base", 2.0, 12.0, fidelity=0.95, loops=0.05),
            ],
            POLICY,
        )
    }
    assert (
        rows["english"]["decision"] == "hold"
        and rows["english"]["reasons"][2] == "Azerbaijani answers 60% (needs ≥ 80%) ✗"
    )
    assert (
        rows["loops"]["decision"] == "hold" and rows["loops"]["reasons"][3] == "degenerate answers 50% (may be ≤ 25%) ✗"
    )
    assert rows["good"]["decision"] == "release"
    assert rows["good"]["delta_fidelity"] == pytest.approx(0.45) and rows["good"][
        "delta_degenerate_rate"
    ] == pytest.approx(-0.55)
    assert rows["base"]["delta_fidelity"] is None  # baselines are the reference, not compared


# --- with per-row numbers: intervals, paired tests, the policy deciding on them -------------------------------------

AZ_ANSWERS = [
    "Bakı Azərbaycanın paytaxtıdır və Xəzər dənizinin sahilində yerləşir.",
    "Mən kitab oxumağı və dostlarımla söhbət etməyi çox sevirəm.",
    "Şəhərin mərkəzində yeni bir park salınıb və axşamlar orada çoxlu adam gəzir.",
    "Bu gün hava çox soyuqdur, ona görə də qalın paltar geyinmək lazımdır.",
]
TR_ANSWER = "Bugün hava çok soğuk, bu yüzden kalın giysiler giymek gerekiyor."
REFERENCES = AZ_ANSWERS * 5  # 20 generation rows


@cache
def generation_rows(answers: tuple) -> dict:
    return protocol.score_generations(list(answers), REFERENCES)[1]


def loss_rows(gain: float, jitter: float = 0.0, rows: int = 120, seed: int = 7) -> dict:
    """A model exactly `gain` bits per byte better than the base on the same rows, ± `jitter` on each row."""
    rng = np.random.default_rng(seed)  # the same seed: the same rows as the base
    sizes = rng.integers(80, 400, rows)
    wobble = np.random.default_rng([round(gain * 1000), round(jitter * 1000)]).standard_normal(rows)
    wobble -= (wobble * sizes).sum() / sizes.sum()  # byte-weighted mean 0: the overall gain stays `gain`
    rates = 1.5 + 0.4 * rng.standard_normal(rows) - gain + jitter * wobble
    return {
        "nll": (rates * sizes * math.log(2)).round(4).tolist(),
        "tokens": (sizes // 2).tolist(),
        "bytes": sizes.tolist(),
    }


def measured(name, kind, base, gain=0.0, jitter=0.0, answers=tuple(REFERENCES)):
    """A task result whose metrics are the point estimates of its per-row numbers, as evaluation returns them."""
    per_row = {**loss_rows(gain, jitter), **generation_rows(tuple(answers))}
    extra = loss_rows(gain, jitter, seed=9)
    metrics = {k: round(v, 5) for k, v in stats.point(per_row).items()}
    metrics.update(
        {
            "fertility": 2.5,
            "custom": {},
            "extra_sets": {"qa": {"bits_per_byte": round(stats.point(extra)["bits_per_byte"], 5), "rows": 120}},
            "per_row": {"heldout": per_row, "extra_sets": {"qa": extra}},
        }
    )
    return {**result(name, kind, base), "metrics": metrics}


STRICT = Policy(
    primary="bits_per_byte",
    min_gain=0.0,
    max_chrf_drop=2.0,
    min_fidelity=0.9,
    max_degenerate_rate=0.2,
    must_beat_last_release=False,
)


def test_every_metric_gets_an_interval_and_candidates_a_paired_test_without_per_row_numbers_in_rows():
    rows = {
        r["name"]: r
        for r in leaderboard.build(
            [measured("base", "baseline", "base"), measured("clear", "candidate", "base", gain=0.1, jitter=0.02)],
            STRICT,
        )
    }
    clear, base = rows["clear"], rows["base"]
    for metric in stats.heldout_metrics():
        lo, hi = clear[f"{metric}_ci"]
        assert lo <= clear[metric] <= hi or math.isclose(lo, hi)
        assert base[f"{metric}_ci"] is not None and base[f"delta_{metric}_ci"] is None
    lo, hi = clear["delta_bits_per_byte_ci"]
    assert lo < clear["delta_bits_per_byte"] < hi < 0 and clear["delta_bits_per_byte_p"] < 0.01
    assert clear["delta_chrf_ci"] == [0.0, 0.0] and clear["delta_chrf_p"] == 1.0  # the same answers
    assert clear["extra_sets"]["qa"]["bits_per_byte_ci"][0] < clear["extra_sets"]["qa"]["bits_per_byte"]
    assert clear["bootstrap"] == {
        "confidence": 0.95,
        "samples": 1000,
        "seed": 0,
        "loss_rows": 120,
        "generated_rows": 20,
    }
    text = json.dumps(list(rows.values()))
    assert '"per_row"' not in text and "nll" not in text and len(text) < 12_000  # rows stay small (a file URI at most)


def test_a_gain_inside_the_noise_is_held_and_a_clear_gain_released():
    rows = {
        r["name"]: r
        for r in leaderboard.build(
            [
                measured("base", "baseline", "base"),
                measured("clear", "candidate", "base", gain=0.1, jitter=0.02),
                measured("noise", "candidate", "base", gain=0.01, jitter=0.3),
            ],
            STRICT,
        )
    }
    assert rows["clear"]["decision"] == "release" and rows["noise"]["decision"] == "hold"
    reason = rows["noise"]["reasons"][0]
    lo, hi = rows["noise"]["delta_bits_per_byte_ci"]
    assert rows["noise"]["delta_bits_per_byte"] == pytest.approx(-0.01, abs=1e-4)  # a gain, but inside the noise
    assert lo < 0 < hi and reason.endswith(": not a clear gain ✗")
    noise, base = rows["noise"]["bits_per_byte"], rows["base"]["bits_per_byte"]
    assert reason.startswith(f"bits per byte {noise:.3f} vs base {base:.3f}: ")
    assert f"[{lo:+.3f}, {hi:+.3f}], p = " in reason
    assert rows["clear"]["reasons"][0].endswith(" ✓") and ", p = " in rows["clear"]["reasons"][0]
    assert [rows[n]["rank"] for n in ("clear", "noise")] == [1, 2]


def test_min_gain_is_judged_on_the_point_or_on_the_bound():
    results = [measured("base", "baseline", "base"), measured("small", "candidate", "base", gain=0.03, jitter=0.05)]
    point = {r["name"]: r for r in leaderboard.build(results, STRICT.replace(min_gain=0.025))}["small"]
    lo, hi = point["delta_bits_per_byte_ci"]
    assert point["decision"] == "release" and -hi < 0.025 < -lo  # the point clears it, the conservative end does not
    on_bound = STRICT.replace(min_gain=0.025, thresholds_on="bound")
    bound = {r["name"]: r for r in leaderboard.build(results, on_bound)}["small"]
    assert bound["decision"] == "hold" and bound["reasons"][0].endswith("its bound smaller than the -0.025 needed ✗")


def test_thresholds_on_bound_holds_a_row_whose_point_passes_but_whose_bound_does_not():
    answers = [TR_ANSWER] + REFERENCES[1:]  # 19 of 20 answers Azerbaijani: 95 %, needs 90 %
    results = [
        measured("base", "baseline", "base"),
        measured("mostly-az", "candidate", "base", gain=0.1, answers=answers),
    ]
    policy = STRICT.replace(max_chrf_drop=20.0)  # one Turkish answer costs chrF++ too
    on_point = {r["name"]: r for r in leaderboard.build(results, policy)}["mostly-az"]
    on_bound = {r["name"]: r for r in leaderboard.build(results, policy.replace(thresholds_on="bound"))}["mostly-az"]
    assert on_point["fidelity"] == 0.95 and on_point["fidelity_ci"][0] < 0.9
    assert on_point["decision"] == "release" and on_bound["decision"] == "hold"
    low = on_bound["fidelity_ci"][0]
    assert on_bound["reasons"][2] == (
        f"Azerbaijani answers 95% [{low:.0%}, 100%] (needs ≥ 90%; judged on the lower bound {low:.0%}) ✗"
    )
    assert on_point["reasons"][2] == f"Azerbaijani answers 95% [{low:.0%}, 100%] (needs ≥ 90%) ✓"


def test_a_higher_is_better_primary_reads_its_interval_the_other_way():
    answers = [TR_ANSWER] * 20
    results = [
        measured("base", "baseline", "base", answers=answers),
        measured("better", "candidate", "base", answers=REFERENCES[:14] + answers[14:]),
    ]
    row = {
        r["name"]: r
        for r in leaderboard.build(results, STRICT.replace(primary="chrf", min_fidelity=0.0, max_degenerate_rate=1.0))
    }["better"]
    lo, hi = row["delta_chrf_ci"]
    assert 0 < lo < hi and row["decision"] == "release"
    assert row["reasons"][0].startswith(
        f"chrF++ {row['chrf']:.1f} vs base {row['base_chrf']:.1f}: {row['delta_chrf']:+.1f} "
        f"[{lo:+.1f}, {hi:+.1f}], p = "
    ) and row["reasons"][0].endswith("✓")


def release_of(result, run_id="5"):
    """The last release of a model as history.last_releases returns it: its row plus its per-row numbers."""
    row = leaderboard.base_row(result)
    return {
        **row,
        "date": "2026-01-02",
        "run_id": run_id,
        "eval_fingerprint": "e",
        "per_row": result["metrics"]["per_row"],
    }


def test_beating_the_last_release_is_a_paired_test_too():
    base = measured("base", "baseline", "base")
    now = measured("clear", "candidate", "base", gain=0.2, jitter=0.02)
    policy = STRICT.replace(must_beat_last_release=True)
    last = {
        "worse release": release_of(measured("clear", "candidate", "base", gain=0.1, jitter=0.02)),
        "same model": release_of(now),
        "within noise": release_of(measured("clear", "candidate", "base", gain=0.19, jitter=0.3)),
    }
    rows = {case: leaderboard.build([base, now], policy, {"clear": release}, "e")[0] for case, release in last.items()}
    beats = rows["worse release"]
    lo, hi = beats["vs_last_release"]["ci"]
    assert hi < 0 and beats["vs_last_release"]["p"] < 0.01 and beats["vs_last_release"]["run_id"] == "5"
    assert beats["decision"] == "release"
    assert beats["reasons"][-1] == (
        f"beats the release of 2026-01-02 (run 5): bits per byte {beats['bits_per_byte']:.3f} "
        f"vs {last['worse release']['bits_per_byte']:.3f}: -0.100 [{lo:+.3f}, {hi:+.3f}], "
        f"p = {beats['vs_last_release']['p']:.2g} ✓"
    )
    assert rows["same model"]["vs_last_release"]["p"] == 1.0 and rows["same model"]["decision"] == "hold"
    assert rows["same model"]["reasons"][-1].startswith("does not clearly beat the release of 2026-01-02 (run 5)")
    noisy = rows["within noise"]
    lo, hi = noisy["vs_last_release"]["ci"]
    assert (
        noisy["bits_per_byte"] < last["within noise"]["bits_per_byte"] and lo < 0 < hi
    )  # a point gain inside the noise
    assert noisy["decision"] == "hold" and noisy["reasons"][-1].endswith(
        f"[{lo:+.3f}, {hi:+.3f}], p = {noisy['vs_last_release']['p']:.2g} ✗"
    )
    other_data = leaderboard.build([base, now], policy, {"clear": last["worse release"]}, "other")[0]
    assert other_data["vs_last_release"] is None and "measured on other held-out data" in other_data["reasons"][-1]


def test_a_release_without_per_row_numbers_is_compared_on_the_point_estimate():
    results = [measured("base", "baseline", "base"), measured("clear", "candidate", "base", gain=0.1)]
    row = {
        r["name"]: r
        for r in leaderboard.build(
            results,
            STRICT.replace(must_beat_last_release=True),
            {
                "clear": {
                    "bits_per_byte": 1.0,
                    "date": "2026-01-02",
                    "run_id": "5",
                    "eval_fingerprint": "e",
                    "per_row": None,
                }
            },
            "e",
        )
    }["clear"]
    assert row["vs_last_release"] is None
    assert row["reasons"][-1] == (
        f"does not beat the release of 2026-01-02 (run 5): bits per byte "
        f"{row['bits_per_byte']:.3f} vs 1.000: {row['bits_per_byte'] - 1:+.3f}, point estimate "
        f"only (that release kept no per-row numbers) ✗"
    )
    older = leaderboard.versus_last_release(
        row, {"eval_loss": 2.0, "date": "d", "run_id": "1", "eval_fingerprint": "e"}, "bits_per_byte", "e"
    )
    assert older == (
        True,
        "not compared with the release of d (run 1): it has no bits_per_byte (measured before that metric existed)",
    )


def test_policy_schema_in_profiles(tmp_path):
    profile = config.load_profile("cpu").policy
    assert profile.primary == config.Policy().primary == "bits_per_byte"
    assert (profile.confidence, profile.bootstrap_samples, profile.thresholds_on) == (0.95, 1000, "point")
    text = (config.profiles_dir() / "cpu.toml").read_text()
    for old, new, message in [
        ("min_gain = 0.015", "min_loss_improvement = 0.02", r"min_loss_improvement was replaced by min_gain"),
        ('thresholds_on = "point"', 'thresholds_on = "lower"', r"thresholds_on must be one of \"point\", \"bound\""),
        ("confidence = 0.95", "confidence = 95.0", r"confidence must be between 0 and 1"),
        ("bootstrap_samples = 1000", "bootstrap_samples = 10", r"bootstrap_samples must be at least 100"),
    ]:
        path = tmp_path / "p.toml"
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(config.ConfigError, match=message):
            config.load_profile(str(path))
    path.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith(("confidence", "thresholds_on")))
    )
    assert config.load_profile(str(path)).policy.thresholds_on == "point"  # the new keys are optional
    with pytest.raises(ValueError, match="thresholds_on"):
        Policy(thresholds_on="upper")  # refused when built: nothing downstream checks it again


def with_benchmark(res: dict, correct: list[int]) -> dict:
    """A task result with a Belebele-style benchmark scored on the same 40 items for every model."""
    rows = {"correct": correct, "correct_norm": correct}
    scores = {
        "accuracy": sum(correct) / len(correct),
        "accuracy_norm": sum(correct) / len(correct),
        "items": len(correct),
        "unfit": 0,
        "kind": "choice",
    }
    res["metrics"] = {
        **res["metrics"],
        "benchmarks": {"belebele": scores},
        "per_row": {"benchmarks": {"belebele": rows}},
    }
    return res


def test_benchmark_metrics_get_intervals_paired_deltas_and_can_hold_a_release():
    base = with_benchmark(result("base", "baseline", "base", 3.0, 10.0), [1, 1, 0, 0] * 10)
    keeps = with_benchmark(result("keeps", "candidate", "base", 2.0, 11.0), [1, 1, 0, 0] * 9 + [1, 0, 0, 0])
    loses = with_benchmark(result("loses", "candidate", "base", 2.0, 11.0), [1, 0, 0, 0] * 10)
    policy = POLICY.replace(must_not_lose=["belebele.accuracy"])
    rows = {r["name"]: r for r in leaderboard.build([base, keeps, loses], policy)}
    bench = rows["loses"]["benchmarks"]["belebele"]
    assert bench["accuracy"] == 0.25 and bench["base_accuracy"] == 0.5 and bench["delta_accuracy"] == -0.25
    assert bench["accuracy_ci"][0] < 0.25 < bench["accuracy_ci"][1]
    assert bench["delta_accuracy_ci"][1] < 0 and bench["delta_accuracy_p"] < 0.01
    assert rows["loses"]["decision"] == "hold" and any("a clear loss ✗" in r for r in rows["loses"]["reasons"])
    assert rows["keeps"]["decision"] == "release" and any("no clear loss ✓" in r for r in rows["keeps"]["reasons"])
    assert rows["base"]["benchmarks"]["belebele"]["delta_accuracy"] is None  # the reference, as for held-out metrics
    assert rows["base"]["benchmarks"]["belebele"]["accuracy_ci"][0] < 0.5
    json.dumps(rows["loses"])


SHORT_ANSWERS = ["Bəli.", "Yes", "No.", "Paris."]  # too short to tell their language


def spoken(name, answers):
    """A candidate clearly better on bits per byte whose greedy answers are `answers`; a fidelity with no answer
    judged is None, as evaluation reports it."""
    found = measured(name, "candidate", "base", gain=0.1, answers=tuple(answers))
    found["metrics"]["fidelity"] = None if math.isnan(found["metrics"]["fidelity"]) else found["metrics"]["fidelity"]
    return found


def test_the_language_check_counts_short_answers_apart_and_holds_a_model_that_only_gives_them():
    results = [
        measured("base", "baseline", "base"),
        spoken("some", REFERENCES[:15] + SHORT_ANSWERS + ["Bakı."]),  # 5 of 20 too short
        spoken("mostly", REFERENCES[:6] + (SHORT_ANSWERS * 4)[:14]),  # 14 of 20
        spoken("terse", SHORT_ANSWERS * 5),  # all 20
    ]
    lenient = STRICT.replace(max_chrf_drop=100.0, max_degenerate_rate=1.0)  # short answers cost chrF++
    rows = {r["name"]: r for r in leaderboard.build(results, lenient)}
    some, mostly, terse = rows["some"], rows["mostly"], rows["terse"]
    assert some["fidelity"] == 1.0 and some["undetermined_rate"] == 0.25 and some["base_undetermined_rate"] == 0
    assert some["delta_undetermined_rate"] == 0.25 and some["delta_undetermined_rate_ci"][0] > 0
    assert some["decision"] == "release"
    assert some["reasons"][2].startswith("Azerbaijani answers 100% [100%, 100%] (needs ≥ 90%); 25% [")
    assert some["reasons"][2].endswith("too short to tell (may be ≤ 50%) ✓")
    assert mostly["fidelity"] == 1.0 and mostly["undetermined_rate"] == 0.7
    assert mostly["decision"] == "hold" and mostly["reasons"][2].endswith("(may be ≤ 50%) ✗")
    assert terse["fidelity"] is None and terse["undetermined_rate"] == 1.0 and terse["decision"] == "hold"
    assert terse["reasons"][2] == (
        "Azerbaijani answers: no answer long enough to tell its language; 100% [100%, 100%] too short to tell "
        "(may be ≤ 50%) ✗"
    )
    anything = {r["name"]: r for r in leaderboard.build(results, lenient.replace(max_undetermined_rate=1.0))}
    assert anything["mostly"]["decision"] == "release" and anything["terse"]["decision"] == "hold"
    ungated = lenient.replace(min_fidelity=0.0, max_undetermined_rate=1.0)  # the smoke profile: language not gated
    terse = {r["name"]: r for r in leaderboard.build(results, ungated)}["terse"]
    assert terse["decision"] == "release" and terse["reasons"][2].endswith("too short to tell (may be ≤ 100%) ✓")
