"""`finetune_flow.py run --judge URL --judge-model NAME`: the rows carry the judge's fields, the leaderboard prints
them, and a second run over the same answers asks the judge nothing (the verdicts are cached by content)."""

import json
import os

import pytest
from conftest import ROOT
from metaflow import Runner
from scripted_llm import Reply, chat_body

from barbarossa import cli

pytestmark = pytest.mark.flow
FLOW = str(ROOT / "flows" / "finetune_flow.py")
JUDGED = (
    "judge.win_rate_vs_base",
    "judge.pairs",
    "judge.ties",
    "judge.unparsed",
    "judge.calls",
    "judge.tokens",
    "judge.seconds",
)


def run(server, root):
    runner = Runner(FLOW, show_output=False, env=dict(os.environ))
    params = {"models": "tiny-llama-lora", "profile": "smoke", "output_root": str(root)}
    with runner.run(**params, judge=server.url, judge_model="scripted-model") as running:
        assert running.status == "successful", running.status
        return running.run


def test_a_judged_run_has_win_rates_in_its_rows_and_a_rerun_asks_the_judge_nothing(scripted_llm, tmp_path, capsys):
    scripted_llm.answer = lambda path, body: Reply(body=chat_body("[[A]]"))  # always the answer shown first
    first = run(scripted_llm, tmp_path / "runs")
    [row] = [r for r in first.data.leaderboard if r["kind"] == "candidate"]
    assert all(key in row for key in JUDGED) and row["judge.model"] == "scripted-model"
    assert row["judge.pairs"] == 4 and row["judge.ties"] == 4  # a position-biased judge: every pair a tie
    assert row["judge.win_rate_vs_base"] == 0.5 and row["judge.calls"] == len(scripted_llm.posts())
    asked = len(scripted_llm.posts())
    second = run(scripted_llm, tmp_path / "runs")  # the same data, seeds and answers: the same verdict requests
    [again] = [r for r in second.data.leaderboard if r["kind"] == "candidate"]
    assert len(scripted_llm.posts()) == asked and again["judge.calls"] == 0
    assert row["decision"] == "release"  # so the first run's candidate is the second's last release, judged too:
    assert again["judge.pairs"] == 8 and again["judge.win_rate_vs_release"] == 0.5  # same answers: every pair tied
    assert cli.main(["leaderboard", "--run", second.id, "--json"]) == 0
    printed = [r for r in json.loads(capsys.readouterr().out) if r["kind"] == "candidate"]
    assert printed[0]["judge.win_rate_vs_base"] == 0.5


def test_a_judge_replying_nonsense_gives_unparsed_counts_no_rate_and_still_a_leaderboard(scripted_llm, tmp_path):
    scripted_llm.answer = lambda path, body: Reply(body=chat_body("Both answers have merit."))
    [row] = [r for r in run(scripted_llm, tmp_path / "runs").data.leaderboard if r["kind"] == "candidate"]
    # against the base every pair is unparsed (a release from an earlier test, if any, gave the same answers:
    # identical pairs are ties without asking)
    assert row["judge.pairs_vs_base"] == 4 and row["judge.unparsed"] == 4
    assert row["judge.win_rate_vs_base"] is None and row["judge.win_rate_vs_base_ci"] is None
    assert row["decision"] in ("release", "hold") and row["reasons"]  # decided on the other metrics
