"""The `barbarossa` command line without a flow run: tables, comparisons, prompts, user name and errors.

The commands against real finished runs (leaderboard, --compare, chat) are tested in test_flow.py,
which already has one.
"""

import json
import os
import subprocess
import sys

from conftest import ROOT
from rich.console import Console

from barbarossa import cli
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
        cli.print_wide(table, console) if wide else console.print(table)
        return console.export_text()


def test_default_leaderboard_fits_80_columns_without_cutting_a_model_name():
    rows = [row(LONGEST, "release"), row(LONGEST_BASE, "baseline", rank=None), row("x", "failed", rank=None, chrf=None)]
    for primary in ("bits_per_byte", "eval_loss", "chrf", "fidelity"):
        text = rendered(
            cli.leaderboard_table(
                rows, "Barbarossa leaderboard — FinetuneFlow/1764263478312345 (2026-11-27 17:20)", primary
            )
        )
        assert max(map(len, text.splitlines())) <= 80 and "…" not in text
        header = "az" if primary == "fidelity" else cli.short(primary)  # fidelity: named for the rows' language
        assert LONGEST in text and LONGEST_BASE in text and header in text and "Δ base" in text


def test_wide_leaderboard_prints_every_column_uncut():
    text = rendered(cli.leaderboard_table([row(LONGEST)], "wide", "eval_loss", wide=True), wide=True)
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
    result = cli.compare(a, b)
    assert result["same_eval_data"] and result["warning"] is None
    assert result["metrics"] == ["bits_per_byte", "chrf", "eval_loss", "fidelity", "degenerate_rate"]
    by_name = {r["name"]: r for r in result["rows"]}
    assert list(by_name) == ["m", "gone", "new"]
    assert by_name["m"]["delta"]["chrf"] == 3.5 and by_name["m"]["delta"]["eval_loss"] == 0
    assert by_name["m"]["a"]["decision"] == "hold" and by_name["m"]["b"]["decision"] == "release"
    assert by_name["gone"]["b"] is None and by_name["gone"]["delta"]["chrf"] is None and by_name["new"]["a"] is None
    assert "rows" not in result["a"] and result["b"]["primary"] == "chrf"


def test_compare_warns_when_the_held_out_data_differ(capsys):
    result = cli.compare(record("FinetuneFlow/1", "e1", [row("m")]), record("FinetuneFlow/2", "e2", [row("m")]))
    assert (
        not result["same_eval_data"]
        and "different held-out data" in result["warning"]
        and "e1 vs e2" in result["warning"]
    )
    cli.print_compare(result)
    out = capsys.readouterr().out
    assert "WARNING: the two runs were measured on different held-out data" in out and "changed" not in out
    assert not cli.compare(record("A", None, []), record("B", None, []))["same_eval_data"]  # unknown is not "same"


def test_chat_lines_are_instructions_with_an_optional_tab_separated_input():
    assert cli.prompt_record("Bakı haqqında iki cümlə yazın.\n") == {
        "instruction": "Bakı haqqında iki cümlə yazın.",
        "input": "",
    }
    assert cli.prompt_record("Tərcümə edin:\tGood morning\n") == {
        "instruction": "Tərcümə edin:",
        "input": "Good morning",
    }
    assert cli.prompt_record("s\u0327ə\tb\tc") == {"instruction": "şə", "input": "b\tc"}  # NFC, as the training data
    assert cli.prompt_record("   \n") is None and cli.prompt_record("\tonly an input") is None


def test_user_name_falls_back_as_the_makefile_does():
    assert cli.default_username("root") == "barbarossa" and cli.default_username("ada") == "ada"
    env = {k: v for k, v in os.environ.items() if k not in ("USERNAME", "METAFLOW_USER", "SUDO_USER")}
    done = subprocess.run(
        [sys.executable, "-m", "barbarossa.cli", "leaderboard", "--run", "1"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.strip().splitlines()  # one clear line, not a traceback
    assert line.startswith("barbarossa leaderboard: Run('FinetuneFlow/1') does not exist")
    assert f"namespace user:{cli.default_username()}" in line


def test_metaflow_errors_are_one_line_and_exit_1(capsys):
    assert cli.main(["leaderboard", "--run", "FinetuneFlow/no-such-run"]) == 1
    assert cli.main(["leaderboard", "--run", "a/b/c"]) == 1  # not a run pathspec at all
    assert cli.main(["leaderboard", "--compare", "1", "2", "3"]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3 and captured.out == "" and all(line.startswith("barbarossa leaderboard: ") for line in lines)
    assert "does not exist" in lines[0] and "one or two runs" in lines[2]


def test_an_installed_package_reads_configs_from_barbarossa_home(tmp_path):
    """A wheel (or the image's /opt/venv) has no configs/ beside the package: BARBAROSSA_HOME names where they are,
    and without it the CLI says so in one line instead of listing no models."""
    import shutil

    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "barbarossa", site / "barbarossa", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("BARBAROSSA_HOME", "BARBAROSSA_ROSTERS")}
    env.update(PYTHONPATH=str(site), COLUMNS="200")

    def models(**extra):
        return subprocess.run(
            [sys.executable, "-m", "barbarossa.cli", "models", "--models", "seed"],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    lost = models()
    assert lost.returncode == 1 and "Traceback" not in lost.stderr
    [line] = lost.stderr.strip().splitlines()
    assert "no roster files in" in line and "BARBAROSSA_HOME" in line
    found = models(BARBAROSSA_HOME=str(ROOT))
    assert found.returncode == 0, found.stderr
    assert "Barbarossa models (29)" in found.stdout


def test_configs_beside_the_package_win_over_barbarossa_home(tmp_path):
    """A checkout or a flow's code package reads its own configs, whatever BARBAROSSA_HOME the image sets."""
    from barbarossa import config

    assert config.find_project_root(ROOT / "barbarossa", str(tmp_path)) == ROOT
    assert config.find_project_root(tmp_path / "site" / "barbarossa", str(ROOT)) == ROOT
    assert config.find_project_root(tmp_path / "site" / "barbarossa", None) == tmp_path / "site"


def test_namespace_option_reads_runs_of_another_namespace(capsys):
    """A deployment's runs are in its production namespace: --namespace names it (or any), else USERNAME's is used."""
    from metaflow import default_namespace, get_namespace

    try:
        assert cli.main(["leaderboard", "--run", "no-such-run", "--namespace", "any"]) == 1
        assert get_namespace() is None
        assert cli.main(["leaderboard", "--run", "no-such-run", "--namespace", "production:abc"]) == 1
        assert get_namespace() == "production:abc"
        assert "in namespace production:abc" in capsys.readouterr().err
    finally:
        default_namespace()


def test_languages_lists_every_pack_and_renders_one_packs_prompt(capsys):
    assert cli.main(["languages", "--json"]) == 0
    rows = {r["code"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"az", "tr", "kk", "uz"} and rows["uz"]["fidelity"].endswith("(ngram)")
    assert rows["kk"]["sample_rows"] == 48 and rows["kk"]["benchmarks"] == ["belebele", "flores"]
    assert cli.main(["languages", "--language", "kk"]) == 0
    shown = capsys.readouterr().out
    assert "### Нұсқаулық:" in shown and "Қазақстанның астанасы қай қала?" in shown
    assert cli.main(["languages", "--language", "xx"]) == 1
    assert "language 'xx' not found" in capsys.readouterr().err


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
    text = rendered(cli.benchmark_table(rows))
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert LONGEST in text and "acc/byte" in text and "chrF into" in text and "p = 0.69" in text and "[" not in text
    wide = rendered(cli.benchmark_table(rows, wide=True), wide=True)
    assert "50% [25%, 83%]" in wide and "+8% [+0%, +25%]" in wide and "accuracy_norm" in wide
    assert cli.benchmark_table([row("x", "release")]) is None
