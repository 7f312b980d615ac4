"""The judge's numbers on synthetic outcomes: the length-controlled fit recovers a known intercept, the interval and
p-value behave, the row fields are all there with no pair, and the settings and pack prompts are checked."""

import numpy as np
import pytest

from barbarossa import judge, languages, llm, metric_registry
from barbarossa.judge import numbers
from barbarossa.judge.pairs import Pair, Verdict


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_the_logistic_fit_recovers_a_known_intercept_and_slope():
    x = np.linspace(-1, 1, 41)
    intercept, slope = numbers.fit_logistic(x, sigmoid(0.8 + 1.5 * x))  # expected scores: the fit is exact
    assert intercept == pytest.approx(0.8, abs=1e-3) and slope == pytest.approx(1.5, abs=0.01)
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 5000)
    drawn = (rng.uniform(size=5000) < sigmoid(-0.6 + 2.0 * x)).astype(float)  # wins and losses drawn from it
    intercept, slope = numbers.fit_logistic(x, drawn)
    assert intercept == pytest.approx(-0.6, abs=0.12) and slope == pytest.approx(2.0, abs=0.25)


def test_the_length_controlled_rate_reads_the_fit_at_zero_difference():
    differences = list(np.linspace(-300, 300, 61))
    scale = np.std(differences)
    outcomes = list(sigmoid(0.4 + 2.0 * np.tanh(np.asarray(differences) / scale)))
    assert numbers.length_controlled(outcomes, differences) == pytest.approx(sigmoid(0.4), abs=1e-3)
    assert numbers.length_controlled([1.0, 1.0, 1.0], [10, -5, 3]) == 1.0  # every pair won: nothing to explain
    assert numbers.win_rate([1.0, 1.0, 0.5]) == 0.83333  # a tie counts half
    assert numbers.length_controlled([1.0, 0.0], [7, 7]) == 0.5  # equal lengths: nothing to control
    assert numbers.length_controlled([], []) is None


def test_the_interval_and_p_value_over_prompts():
    even = [1.0, 0.0] * 10
    interval, p = numbers.bootstrap(even, seed=3)
    assert interval[0] < 0.5 < interval[1] and p > 0.5
    strong = [1.0] * 18 + [0.0] * 2
    interval, p = numbers.bootstrap(strong, seed=3)
    assert 0.5 < interval[0] < 0.9 <= interval[1] and p < 0.01
    assert numbers.bootstrap(strong, seed=3) == (interval, p)  # seeded
    assert numbers.bootstrap([]) == (None, None)


def nonsense_pair() -> Pair:
    unread = Verdict(None, "text")
    return Pair("instruction", "mine", "theirs", unread, unread, None)


def test_the_row_fields_with_no_parsed_pair_keep_their_counts():
    settings = judge.Judge(endpoint="http://127.0.0.1:9/v1", model="judge-model")
    fields = judge.row_fields(settings, judge.Judgement("judge-model", [nonsense_pair()] * 3, calls=6, tokens=60))
    expected = {f"judge.{n}_vs_{a}" for n in ("win_rate", "lc_win_rate", "length_moved") for a in ("base", "release")}
    expected |= {
        f"judge.{n}_vs_{a}_{tail}"
        for n in ("win_rate", "lc_win_rate")
        for a in ("base", "release")
        for tail in ("ci", "p")
    }
    assert {k for k, v in fields.items() if v is None} == expected | {"judge.pairs_vs_release"}  # never compared
    assert fields["judge.pairs_vs_base"] == 3  # compared, nothing read
    counts = [fields[f"judge.{k}"] for k in ("pairs", "ties", "unparsed", "calls", "tokens")]
    assert counts == [3, 0, 3, 6, 60] and fields["judge.model"] == "judge-model"


def test_judging_is_off_unless_configured_and_its_settings_are_checked():
    assert not judge.Judge().enabled
    settings = judge.Judge(endpoint="http://judge:8000/v1", model="qwen", api_key_env="JUDGE_KEY", max_tokens=8)
    teacher = judge.teacher(settings)
    assert settings.enabled and isinstance(teacher, llm.Teacher)
    assert (teacher.endpoint, teacher.model, teacher.api_key_env, teacher.max_tokens) == (
        "http://judge:8000/v1",
        "qwen",
        "JUDGE_KEY",
        8,
    )
    for bad in ({"mode": "vibes"}, {"prompts": 0}, {"top_k": -1}, {"confidence": 1.0}, {"endpoint": "http://x"}):
        with pytest.raises(ValueError):
            judge.Judge(**bad)


def test_every_pack_has_a_judge_prompt_that_names_its_language():
    for code in languages.known():
        pack = languages.load(code)
        prompt = judge.render(pack, {"instruction": "I", "input": "", "output": "R"}, "first", "second")
        assert pack["name"] in prompt and prompt.index("first") < prompt.index("second")
        assert all(label in prompt for label in ("[[A]]", "[[B]]", "[[C]]"))
    with pytest.raises(ValueError, match="must contain '\\{reference\\}'"):
        languages.JudgeText(prompt="{instruction} {input} {answer_a} {answer_b} [[A]] [[B]] [[C]]")


def test_the_judge_metrics_are_registered_as_shares_where_higher_is_better():
    judged = metric_registry.by_group("judge")
    assert {m.key for m in judged} == {
        f"judge.{name}_vs_{against}" for name in ("win_rate", "lc_win_rate") for against in ("base", "release")
    }
    assert all(m.higher_is_better and m.share for m in judged)
    assert metric_registry.format_value("judge.lc_win_rate_vs_release", 0.6875) == "69%"
    assert metric_registry.label("judge.win_rate_vs_base") == "judge's win rate against the base"
