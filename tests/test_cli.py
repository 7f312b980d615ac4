"""The `barbarossa` command line without a flow run: prompts, user name, errors, namespaces, listings.

The tables and comparisons it prints are tested in test_reporting.py; the commands against real finished runs
(leaderboard, --compare, chat) in test_flow.py, which already has one.
"""

import json
import os
import subprocess
import sys

from conftest import ROOT

from barbarossa import cli


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
