"""Where the judge's numbers are shown: the console's judge table (the flow's end and `barbarossa leaderboard`),
`--compare`, and the leaderboard card's judge section with its examples side by side."""

import datetime
import json
import os

import pytest
from rich.console import Console

from barbarossa import cli, metric_registry, reporting
from barbarossa.decide import cards, history
from barbarossa.metric_registry import Metric

NOT_COMPARED = {  # comparison_fields without a judgement: the run had no last release on the same data
    "judge.win_rate_vs_release": None,
    "judge.win_rate_vs_release_ci": None,
    "judge.win_rate_vs_release_p": None,
    "judge.lc_win_rate_vs_release": None,
    "judge.length_moved_vs_release": None,
    "judge.pairs_vs_release": None,
}


def judged(name: str = "smollm2-135m-lora-attn", rate: float = 0.8, controlled: float = 0.52, **fields) -> dict:
    """A candidate row the judge compared with its base only: `rate` raw, `controlled` length-controlled."""
    example = {
        "instruction": "Azərbaycanın paytaxtı hansı şəhərdir?",
        "candidate": "Bakı. " * 60,  # 360 characters: clipped on the card
        "base": "",
        "verdicts": ["A", "B"],
        "outcome": "win",
    }
    return {
        "name": name,
        "kind": "candidate",
        "status": "ok",
        "rank": 1,
        "base": "smollm2-135m",
        "decision": "hold",
        "reasons": ["held"],
        "bits_per_byte": 1.2,
        "judge.win_rate_vs_base": rate,
        "judge.win_rate_vs_base_ci": [0.62, 0.94],
        "judge.win_rate_vs_base_p": 0.01,
        "judge.lc_win_rate_vs_base": controlled,
        "judge.length_moved_vs_base": abs(rate - controlled) > 0.1,
        "judge.pairs_vs_base": 16,
        **NOT_COMPARED,
        "judge.pairs": 16,
        "judge.ties": 3,
        "judge.unparsed": 1,
        "judge.model": "Qwen2.5-72B-Instruct",
        "judge.calls": 32,
        "judge.tokens": 12345,
        "judge.seconds": 41.5,
        "judge.examples": [example, {**example, "verdicts": ["C", None], "outcome": "unparsed"}],
        **fields,
    }


COUNTS = ["16", "3", "1", "32", "12,345", "41.5"]  # pairs, ties, unparsed, calls, tokens, seconds of judged()


def plain(name: str = "unjudged") -> dict:
    """A row without judging: no `judge.*` field at all."""
    return {
        "name": name,
        "kind": "candidate",
        "status": "ok",
        "rank": 2,
        "base": "smollm2-135m",
        "decision": "hold",
        "reasons": ["held"],
        "bits_per_byte": 1.3,
    }


def text_of(table) -> str:
    with open(os.devnull, "w") as devnull:
        console = Console(width=80, record=True, file=devnull)
        reporting.print_wide(table, console)
        return console.export_text()


def test_the_console_judge_table_has_a_line_per_judged_candidate_with_its_interval():
    text = text_of(reporting.judge_table([judged(), plain()]))
    lines = text.splitlines()
    assert lines[0].strip() == "Judge: Qwen2.5-72B-Instruct"
    line = next(line for line in lines if line.startswith("smollm2-135m-lora-attn"))
    assert line.split() == ["smollm2-135m-lora-attn", "80%", "[62%,", "94%]", "52%", "–", "–", *COUNTS]
    assert "unjudged" not in text and "LC win/" in text and "release" in text
    assert max(map(len, lines)) <= 110  # a 22-character name, the longest in the rosters
    assert reporting.judge_table([plain()]) is None


@pytest.fixture
def toy_judge():
    """A judge metric registered for one test (the registry as it was afterwards)."""
    toy = metric_registry.register(Metric("judge.toy_vs_base", "toy", "toy/base", "judge", True, share=True))
    yield toy
    del metric_registry._REGISTERED[toy.key]


def test_the_judge_columns_are_the_registrys(toy_judge):
    assert "toy/base" in cards.judge_headers()
    assert "25%" in cards.judge_cells(judged(**{"judge.toy_vs_base": 0.25}))
    assert "toy/" in text_of(reporting.judge_table([judged()]))


def test_the_flow_prints_the_judge_table_and_no_line_per_row(capsys):
    reporting.print_leaderboard([judged(), plain()], "bits_per_byte")
    out = capsys.readouterr().out
    assert "Judge: Qwen2.5-72B-Instruct" in out and "80% [62%, 94%]" in out
    assert "judge Qwen2.5-72B-Instruct win rate" not in out  # the old per-row line is gone
    reporting.print_leaderboard([plain()], "bits_per_byte")
    assert "Judge:" not in capsys.readouterr().out


def test_barbarossa_leaderboard_shows_the_judge_table_and_json_keeps_the_fields(monkeypatch, capsys):
    class Run:
        pathspec = "FinetuneFlow/1"
        finished_at = datetime.datetime(2026, 11, 27, 17, 20)

        class data:
            leaderboard = [judged(language="az"), plain() | {"language": "az"}]

    monkeypatch.setattr(cli, "find_run", lambda run_id: Run)
    monkeypatch.setattr("barbarossa.decide.history.primary_of", lambda run, default: "bits_per_byte")
    assert cli.main(["leaderboard"]) == 0
    out = capsys.readouterr().out
    assert "Judge: Qwen2.5-72B-Instruct" in out and "80% [62%, 94%]" in out
    assert cli.main(["leaderboard", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["judge.win_rate_vs_base_ci"] == [0.62, 0.94] and rows[0]["judge.examples"][0]["outcome"] == "win"
    assert not any(key.startswith("judge.") for key in rows[1])


def record(run: str, rows: list[dict]) -> dict:
    return {
        "run": run,
        "finished_at": "2026-11-27 17:20:00",
        "primary": "bits_per_byte",
        "eval_fingerprint": "e1",
        "train_fingerprint": "t",
        "rows": rows,
    }


def test_compare_shows_the_judges_rates_and_a_run_without_a_judge_gives_none(capsys):
    result = reporting.compare(record("FinetuneFlow/1", [plain("m")]), record("FinetuneFlow/2", [judged("m")]))
    assert result["metrics"][-2:] == ["judge.win_rate_vs_base", "judge.lc_win_rate_vs_base"]
    (row,) = result["rows"]
    assert row["a"]["judge.win_rate_vs_base"] is None and row["b"]["judge.win_rate_vs_base"] == 0.8
    assert row["delta"]["judge.win_rate_vs_base"] is None and row["delta"]["judge.lc_win_rate_vs_base"] is None
    reporting.print_compare(result)
    line = next(line for line in capsys.readouterr().out.splitlines() if "LC win/base" in line)
    assert line.split()[-3:] == ["–", "0.520", "–"]
    both = reporting.compare(record("A", [judged("m", rate=0.6)]), record("B", [judged("m")]))
    assert both["rows"][0]["delta"]["judge.win_rate_vs_base"] == 0.2


def test_a_run_record_keeps_the_judge_fields_for_compare():
    """history.run_record of two runs (a stand-in for the Client's Run): an older run without a judge (its rows from
    before language packs, upgraded) and a judged one; compare reads the judge's rates from the recorded rows."""

    def run(pathspec: str, rows: list[dict]):
        data = type("Data", (), {"leaderboard": rows, "data": {"eval_fingerprint": "e1"}, "settings": None})
        return type("Run", (), {"pathspec": pathspec, "finished_at": "2026-11-27 17:20:00", "data": data})

    old = history.run_record(run("FinetuneFlow/1", [plain("m")]), "bits_per_byte")
    new = history.run_record(run("FinetuneFlow/2", [judged("m", language="az")]), "bits_per_byte")
    assert new["rows"][0]["judge.win_rate_vs_base_ci"] == [0.62, 0.94] and new["rows"][0]["judge.examples"]
    row = reporting.compare(old, new)["rows"][0]
    assert row["b"]["judge.lc_win_rate_vs_base"] == 0.52 and row["a"]["judge.lc_win_rate_vs_base"] is None


def test_the_card_shows_the_judged_candidates_numbers_as_the_console_does():
    assert cards.judged_rows([judged(), plain()]) == [judged()]
    assert cards.judge_headers()[:5] == ["model", "win/base", "LC win/base", "win/release", "LC win/release"]
    assert cards.judge_cells(judged()) == [
        "smollm2-135m-lora-attn",
        "80% [62%, 94%]",
        "52%",
        "–",
        "–",
        *COUNTS,
    ]


def test_the_length_sentence_appears_only_where_length_control_moves_the_rate():
    moved, steady = judged("moved"), judged("steady", rate=0.6, controlled=0.55)
    sentences = cards.length_sentences([moved, steady, plain()])
    assert sentences == [
        "**moved**: judge's win rate against the base 80% but 52% length-controlled (more than 10 points apart): "
        "the judge's preference follows answer length"
    ]
    release = judged("r", rate=0.6, controlled=0.55, **{"judge.win_rate_vs_release": 0.3})
    release |= {"judge.lc_win_rate_vs_release": 0.5, "judge.length_moved_vs_release": True}
    assert cards.length_sentences([release]) == [
        "**r**: judge's win rate against the last release 30% but 50% length-controlled (more than 10 points "
        "apart): the judge's preference follows answer length"
    ]


def test_the_card_puts_judged_pairs_side_by_side_with_the_verdicts_read_for_the_candidate():
    rows = cards.judge_example_rows([judged(), plain()])
    assert len(rows) == 2
    name, instruction, candidate, base, first, second, outcome = rows[0]
    assert (name, instruction, base) == ("smollm2-135m-lora-attn", "Azərbaycanın paytaxtı hansı şəhərdir?", "(empty)")
    assert len(candidate) == 200 and candidate.endswith("…") and candidate.startswith("Bakı. Bakı.")
    assert (first, second, outcome) == ("A: candidate", "B: candidate", "win")
    assert rows[1][4:] == ["C: tie", "unparsed", "unparsed"]
    assert cards.verdict_text("A", candidate_first=False) == "A: base"
    assert cards.judge_example_rows([judged()], per_model=1) == rows[:1]


def test_the_leaderboard_card_has_a_judge_section_only_when_something_was_judged():
    summary = {"train_rows": 1, "train_fingerprint": "t", "eval_rows": 1, "eval_fingerprint": "e", "eval_source": "x"}
    base = plain("smollm2-135m") | {"kind": "baseline", "decision": "baseline", "rank": None}

    def card(rows):
        return json.dumps([p.render() for p in cards.leaderboard_components(rows, {}, summary)], ensure_ascii=False)

    text = card([judged(), plain(), base])
    assert "## The judge: Qwen2.5-72B-Instruct" in text and "80% [62%, 94%]" in text
    assert "the judge's preference follows answer length" in text and "candidate shown second" in text
    unmoved = card([judged(controlled=0.75), plain(), base])
    assert "## The judge" in unmoved and "follows answer length" not in unmoved
    nothing = card([plain(), base])
    assert "## The judge" not in nothing and "Judged pairs" not in nothing and "win/base" not in nothing
