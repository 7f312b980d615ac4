"""A release policy may rank on the judge's win rate against the base or require that no judged win rate is clearly
lost; a profile's [judge] table sets the judge up, --judge / --judge-model override it, and a policy that needs a
judge refuses to start without one."""

import re

import pytest

from barbarossa import config, judge
from barbarossa.config import ConfigError, Policy, SettingError
from barbarossa.decide import leaderboard
from barbarossa.judge.pairs import Judgement, Pair, Verdict

SETTINGS = judge.Judge(endpoint="http://judge:8000/v1", model="judge-model")
LOOSE = {"min_gain": 0.0, "max_chrf_drop": 100.0, "min_fidelity": 0.0, "max_degenerate_rate": 1.0}  # the judge decides


def judgement(wins: int, ties: int, losses: int) -> Judgement:
    """A comparison with these outcomes, every answer pair equally long (length explains nothing)."""
    outcomes = ["win"] * wins + ["tie"] * ties + ["loss"] * losses
    pairs = [
        Pair(f"prompt {i}", "mine", "them", Verdict("A", "text"), Verdict("B", "text"), o)
        for i, o in enumerate(outcomes)
    ]
    return Judgement("judge-model", pairs, calls=2 * len(pairs), tokens=100 * len(pairs))


def result(name: str, kind: str) -> dict:
    item = {"name": name, "kind": kind, "base": {"name": "base", "family": "llama"}, "lora": None}
    metrics = {"eval_loss": 2.0, "perplexity": 7.4, "chrf": 10.0, "bleu": 1.0, "fidelity": 1.0, "degenerate_rate": 0.0}
    return {"item": item, "train": None, "metrics": metrics, "error": None}


def board(policy: Policy, judged: dict, last: dict | None = None) -> dict[str, dict]:
    results = [result("base", "baseline"), *(result(name, "candidate") for name in ("clear", "even", "unjudged"))]
    rows = leaderboard.build(results, policy, last, "e", judged=judged)
    return {row["name"]: row for row in rows}


JUDGED = {
    "clear": judge.row_fields(SETTINGS, judgement(17, 2, 1)),
    "even": judge.row_fields(SETTINGS, judgement(8, 4, 8)),
}


def test_the_policy_ranks_on_the_judges_win_rate_and_releases_only_a_clear_win():
    rows = board(Policy(primary="judge.win_rate_vs_base", must_beat_last_release=False, **LOOSE), JUDGED)
    assert [rows[name]["rank"] for name in ("clear", "even", "unjudged")] == [1, 2, 3]  # unjudged last
    assert rows["clear"]["decision"] == "release"
    assert rows["clear"]["reasons"][0].startswith("judge's win rate against the base 90% [")
    assert rows["clear"]["reasons"][0].endswith("(20 pairs, ties half) (needs ≥ 50%) ✓")
    assert (
        rows["even"]["decision"] == "hold"
        and "not clearly preferred to the base's answers ✗" in rows["even"]["reasons"][0]
    )
    assert rows["unjudged"]["decision"] == "hold" and "not judged" in rows["unjudged"]["reasons"][0]


def test_min_gain_over_a_tie_is_asked_of_the_judged_rate():
    policy = Policy(primary="judge.lc_win_rate_vs_base", must_beat_last_release=False, **(LOOSE | {"min_gain": 0.45}))
    rows = board(policy, JUDGED)
    assert rows["clear"]["judge.lc_win_rate_vs_base"] == 0.9  # equal lengths: the controlled rate is the raw one
    assert rows["clear"]["decision"] == "hold" and rows["clear"]["reasons"][0].endswith("below 95% ✗")


def test_must_not_lose_holds_a_clear_judged_loss_and_passes_a_missing_release():
    losing = {"clear": judge.row_fields(SETTINGS, judgement(1, 2, 17))}
    policy = Policy(must_not_lose=("judge.win_rate_vs_base", "judge.win_rate_vs_release"), **LOOSE)
    rows = board(policy, JUDGED | losing)
    clear, even, unjudged = rows["clear"], rows["even"], rows["unjudged"]
    assert "judge's win rate against the base 10% [" in clear["reasons"][-3] and clear["reasons"][-3].endswith(
        "a clear loss ✗"
    )
    assert even["reasons"][-3].endswith("no clear loss ✓")  # even: no clear loss
    assert even["reasons"][-2] == "judge.win_rate_vs_release: no earlier release judged on this held-out set ✓"
    assert clear["decision"] == "hold" and unjudged["decision"] == "hold" and "not judged" in unjudged["reasons"][-3]


def test_a_judged_primary_must_clearly_beat_the_last_release_by_the_judge():
    last = {"clear": {"date": "2026-11-01", "run_id": "7", "eval_fingerprint": "e", "per_row": {}}}
    fields = judge.row_fields(SETTINGS, judgement(17, 2, 1), judgement(9, 2, 9))  # as good as the release
    policy = Policy(primary="judge.win_rate_vs_base", must_beat_last_release=True, **LOOSE)
    rows = board(policy, {"clear": fields}, last)
    assert rows["clear"]["decision"] == "hold"
    assert rows["clear"]["reasons"][-1].startswith("does not clearly beat the release of 2026-11-01 (run 7): judge's")
    better = judge.row_fields(SETTINGS, judgement(17, 2, 1), judgement(18, 2, 0))
    assert board(policy, {"clear": better}, last)["clear"]["decision"] == "release"


def test_policy_entries_must_name_a_registered_judge_rate():
    assert Policy(primary="judge.win_rate_vs_base").needs_judge() == ["judge.win_rate_vs_base"]
    assert Policy(must_not_lose=("judge.lc_win_rate_vs_release",)).needs_judge() == ["judge.lc_win_rate_vs_release"]
    with pytest.raises(SettingError, match="a judge's win rate \\(judge.win_rate_vs_base"):
        Policy(must_not_lose=("judge.win_rate",))
    with pytest.raises(SettingError, match="primary"):
        Policy(primary="judge.win_rate_vs_release")  # against the base only: a release may not exist


def profile_file(tmp_path, primary: str = "", judge_table: str = "") -> str:
    """The smoke profile with another primary metric and a [judge] table."""
    text = (config.profiles_dir() / "smoke.toml").read_text(encoding="utf-8")
    if primary:
        text = re.sub(r"^primary = .*$", f'primary = "{primary}"', text, count=1, flags=re.M)
    path = tmp_path / "judged.toml"
    path.write_text(f"{text}\n{judge_table}", encoding="utf-8")
    return str(path)


def test_a_profiles_judge_table_sets_the_judge_and_the_flags_override_it(tmp_path):
    table = '[judge]\nendpoint = "http://judge:8000/v1"\nmodel = "qwen"\nprompts = 8\n'
    profile = config.load_profile(profile_file(tmp_path, judge_table=table))
    assert profile.judge.enabled and profile.judge.prompts == 8
    flagged = profile.with_judge(model="llama")
    assert (flagged.judge.endpoint, flagged.judge.model, flagged.judge.prompts) == ("http://judge:8000/v1", "llama", 8)
    assert not config.load_profile(profile_file(tmp_path)).with_judge().judge.enabled  # off unless configured
    with pytest.raises(ConfigError, match="model must be named too"):
        config.load_profile(profile_file(tmp_path)).with_judge(endpoint="http://judge:8000/v1")
    with pytest.raises(ConfigError, match="\\[judge\\] unknown key\\(s\\) modle"):
        config.load_profile(profile_file(tmp_path, judge_table='[judge]\nmodle = "x"\n'))


def test_a_policy_that_needs_a_judge_refuses_to_start_without_one(tmp_path):
    needs = profile_file(tmp_path, "judge.win_rate_vs_base")
    with pytest.raises(ConfigError, match="names judge.win_rate_vs_base, a judge's win rate, but judging is off"):
        config.load_profile(needs).with_judge()
    assert config.load_profile(needs).with_judge("http://judge:8000/v1", "qwen").judge.enabled
    top_k = profile_file(tmp_path, "judge.win_rate_vs_base", "[judge]\ntop_k = 2\n")
    with pytest.raises(ConfigError, match="set top_k = 0"):
        config.load_profile(top_k).with_judge("http://judge:8000/v1", "qwen")
