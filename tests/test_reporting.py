"""The console's tables and reports (barbarossa/reporting.py): the leaderboard at 80 columns and wide, benchmarks,
two runs side by side."""

import os

from rich.console import Console

from barbarossa import metric_registry, reporting
from barbarossa.models import roster

LONGEST = max((c.name for r in roster.all_rosters().values() for c in r.candidates), key=len)
LONGEST_BASE = max((c.base.name for r in roster.all_rosters().values() for c in r.candidates), key=len)


def row(name: str, decision: str = "hold", rank=1, **metrics) -> dict:
    values = {
        "bits_per_byte": 1.2345,
        "delta_bits_per_byte": -0.0123,
        "eval_loss": 3.4567,
        "delta_eval_loss": -0.805,
        "chrf": 21.25,
        "fidelity": 0.9375,
        "degenerate_rate": 0.125,
    }
    return {
        "name": name,
        "kind": "candidate",
        "status": "ok",
        "rank": rank,
        "decision": decision,
        "lora": "r=16 α=64 q_proj,v_proj",
        **values,
        **metrics,
    }


def rendered(table, width: int = 80, wide: bool = False) -> str:
    with open(os.devnull, "w") as devnull:
        console = Console(width=width, record=True, file=devnull)
        reporting.print_wide(table, console) if wide else console.print(table)
        return console.export_text()


def test_default_leaderboard_fits_80_columns_without_cutting_a_model_name():
    rows = [row(LONGEST, "release"), row(LONGEST_BASE, "baseline", rank=None), row("x", "failed", rank=None, chrf=None)]
    for primary in ("bits_per_byte", "eval_loss", "chrf", "fidelity"):
        text = rendered(
            reporting.leaderboard_table(
                rows, "Barbarossa leaderboard — FinetuneFlow/1764263478312345 (2026-11-27 17:20)", primary
            )
        )
        assert max(map(len, text.splitlines())) <= 80 and "…" not in text
        header = metric_registry.short_label(primary, "az")  # fidelity: named for the rows' language, "az"
        assert LONGEST in text and LONGEST_BASE in text and header in text and "Δ base" in text


def test_wide_leaderboard_prints_every_column_uncut():
    text = rendered(reporting.leaderboard_table([row(LONGEST)], "wide", "eval_loss", wide=True), wide=True)
    header = text.splitlines()[1]
    assert "…" not in text and max(map(len, text.splitlines())) > 80
    assert all(name in header for name in ("kind", "LoRA", "bits/byte", "ppl", "BLEU", "loops", "tok/word", "train s"))
    assert "r=16 α=64 q_proj,v_proj" in text


def record(run: str, fingerprint: str, rows: list[dict], primary: str = "bits_per_byte") -> dict:
    return {
        "run": run,
        "finished_at": "2026-11-27 17:20:00",
        "primary": primary,
        "eval_fingerprint": fingerprint,
        "train_fingerprint": "t",
        "rows": rows,
    }


def test_compare_puts_two_runs_side_by_side_and_subtracts():
    a = record("FinetuneFlow/1", "e1", [row("m", chrf=20.0), row("gone", "failed")])
    b = record("FinetuneFlow/2", "e1", [row("m", "release", chrf=23.5), row("new")], primary="chrf")
    result = reporting.compare(a, b)
    assert result["same_eval_data"] and result["warning"] is None
    assert result["metrics"] == [
        "bits_per_byte",
        "chrf",
        "eval_loss",
        "fidelity",
        "undetermined_rate",
        "degenerate_rate",
        "judge.win_rate_vs_base",
        "judge.lc_win_rate_vs_base",
    ]
    by_name = {r["name"]: r for r in result["rows"]}
    assert list(by_name) == ["m", "gone", "new"]
    assert by_name["m"]["delta"]["chrf"] == 3.5 and by_name["m"]["delta"]["eval_loss"] == 0
    assert by_name["m"]["a"]["decision"] == "hold" and by_name["m"]["b"]["decision"] == "release"
    assert by_name["gone"]["b"] is None and by_name["gone"]["delta"]["chrf"] is None and by_name["new"]["a"] is None
    assert by_name["m"]["b"]["judge.win_rate_vs_base"] is None  # neither run was judged: none, not an error
    assert "rows" not in result["a"] and result["b"]["primary"] == "chrf"


def test_compare_warns_when_the_held_out_data_differ(capsys):
    result = reporting.compare(record("FinetuneFlow/1", "e1", [row("m")]), record("FinetuneFlow/2", "e2", [row("m")]))
    assert (
        not result["same_eval_data"]
        and "different held-out data" in result["warning"]
        and "e1 vs e2" in result["warning"]
    )
    reporting.print_compare(result)
    out = capsys.readouterr().out
    assert "WARNING: the two runs were measured on different held-out data" in out and "changed" not in out
    assert not reporting.compare(record("A", None, []), record("B", None, []))[
        "same_eval_data"
    ]  # unknown is not "same"


def test_benchmark_table_fits_80_columns_and_wide_adds_the_intervals():
    scores = {
        "accuracy": 0.5,
        "accuracy_ci": [0.25, 0.83],
        "delta_accuracy": 0.083,
        "delta_accuracy_ci": [0.0, 0.25],
        "delta_accuracy_p": 0.69,
        "accuracy_norm": 0.75,
        "accuracy_norm_ci": [0.5, 1.0],
        "delta_accuracy_norm": 0.0,
        "delta_accuracy_norm_ci": [0.0, 0.0],
        "delta_accuracy_norm_p": 1.0,
    }
    rows = [
        {
            **row(LONGEST, "release"),
            "benchmarks": {
                "belebele": scores,
                "flores": {
                    "chrf_into": 7.4,
                    "chrf_into_ci": [5.9, 9.1],
                    "delta_chrf_into": -0.1,
                    "delta_chrf_into_p": 0.86,
                },
            },
        }
    ]
    text = rendered(reporting.benchmark_table(rows))
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert LONGEST in text and "acc/byte" in text and "chrF into" in text and "p = 0.69" in text and "[" not in text
    wide = rendered(reporting.benchmark_table(rows, wide=True), wide=True)
    assert "50% [25%, 83%]" in wide and "+8% [+0%, +25%]" in wide and "accuracy_norm" in wide
    assert reporting.benchmark_table([row("x", "release")]) is None
