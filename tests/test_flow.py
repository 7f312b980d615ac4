"""The whole flow end to end through Metaflow's Runner, on tiny models of two families."""

import base64
import json
import os
import re

import pytest
from conftest import ROOT, render_in_chromium, rows, write_jsonl
from metaflow import Runner

from barbarossa import cli, metric_registry
from barbarossa.data import instructions
from barbarossa.decide import cards, history
from barbarossa.engine.runtime import choose_precision, probe

pytestmark = pytest.mark.flow
HOST_PRECISION = choose_precision(probe(), "auto")  # what "auto" gives the flow's tasks on this machine

FLOW = str(ROOT / "flows" / "finetune_flow.py")

BROKEN = """
name = "broken"

[[base]]
name = "hub-remote"
source = "hf:example/remote-code-model"
family = "llama"
certainty = "unverified"
licence = "unknown"
params = "7B"
remote_code = true

[[candidate]]
name = "unpinned-remote-code"
base = "hub-remote"

[[candidate]]
name = "broken"
base = "tiny-llama"
lora = { r = 4, alpha = 8, dropout = 0.0, targets = ["no_such_module"] }

[[candidate]]
name = "diverges"
base = "tiny-llama-big"
train = { learning_rate = 1e30 }  # weights overflow: the loss turns non-finite

[[base]]
name = "tiny-llama"
source = "tiny:llama"
family = "llama"
certainty = "confirmed"
licence = "none"
params = "0.2M"

[[base]]
name = "tiny-llama-big"  # declared as needing a big GPU: it lands in the large size class
source = "tiny:llama"
family = "llama"
certainty = "confirmed"
licence = "none"
params = "0.2M"
resources = { gpus = 1, gpu_memory_gb = 80, cpu = 2, memory_gb = 8, disk_gb = 1, timeout_hours = 1 }
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    rosters = tmp_path_factory.mktemp("rosters")
    (rosters / "tiny.toml").write_text((ROOT / "configs" / "rosters" / "tiny.toml").read_text())
    (rosters / "broken.toml").write_text(BROKEN)
    # a simulated 1×80 GB GPU: the local tune tasks lease their memory (and, with no CUDA here, still run on the CPU)
    return {"BARBAROSSA_ROSTERS": str(rosters), "METAFLOW_RUN_MAX_WORKERS": "2", "BARBAROSSA_GPU_INVENTORY": "1x80"}


def tune_tasks(run):
    return [task for name in ("tune_small", "tune_large") for task in run[name]]


LOCAL_INFRA = {"compute": "local", "models": "tiny", "large_from_gpu_memory_gb": 40}


def run_flow(env, infra=LOCAL_INFRA, **params):
    runner = Runner(FLOW, show_output=False, env={**os.environ, **env}, config_value=[("infra", infra)])
    with runner.run(**params) as running:
        return running.status, running.run


# On the tasks' PYTHONPATH: in the `start` task, every base tokenizer load is written down (base name per line).
COUNT_TOKENIZER_LOADS = """
import os, sys
if "step" in sys.argv[:-1] and sys.argv[sys.argv.index("step") + 1] == "start":
    from barbarossa.engine import loading

    _load = loading.load_base_tokenizer

    def _counted(base, *args, **kwargs):
        with open(os.path.join(os.environ["BARBAROSSA_TEST_PROBE"], "tokenizer-loads.txt"), "a") as out:
            out.write(base["name"] + "\\n")
        return _load(base, *args, **kwargs)

    loading.load_base_tokenizer = _counted
"""


@pytest.fixture(scope="module")
def finished(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    eval_file = write_jsonl(out / "other_eval.jsonl", rows(7, start=1000))  # a file the flow has never seen
    probe = out / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(COUNT_TOKENIZER_LOADS)
    counted = {
        **env,
        "BARBAROSSA_TEST_PROBE": str(probe),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")])),
    }
    status, run = run_flow(
        counted,
        models="tiny,broken",
        profile="smoke",
        max_steps=3,
        eval_data=str(eval_file),
        output_root=str(out / "runs"),
        release_to=str(out / "published"),
        publish=True,
        merge=True,
    )
    return status, run, out


def test_start_loads_each_base_tokenizer_once(finished):
    """Preflight loads each base's tokenizer; the token cache and the masking preview reuse it."""
    _, run, out = finished
    loads = (out / "probe" / "tokenizer-loads.txt").read_text().split()
    expected = {item["base"]["name"] for cls in run["start"].task.data.classes.values() for item in cls}
    assert expected >= {"tiny-llama", "tiny-gpt2", "tiny-t5", "tiny-bloom"}
    assert sorted(loads) == sorted(expected)  # each once; refused bases (remote code unpinned) not at all


def test_flow_finishes_with_a_failed_row_instead_of_crashing(finished):
    status, run, _ = finished
    assert status == "successful", run["end"].task.stderr if run else status
    rows_by_name = {r["name"]: r for r in run.data.leaderboard}
    families = ("llama", "gpt2", "t5", "bloom")
    assert set(rows_by_name) == {f"tiny-{f}{s}" for f in families for s in ("", "-lora")} | {
        "broken",
        "diverges",
        "hub-remote",
        "unpinned-remote-code",
        "tiny-llama-big",
        "tiny-llama-qlora",
    }
    large = sorted(task.data.item["name"] for task in run["tune_large"])
    assert large == ["diverges", "tiny-llama-big"]  # the size class follows the roster's resources
    diverged = rows_by_name["diverges"]
    assert (
        diverged["decision"] == "failed"
        and diverged["error"].startswith("finetune failed: TrainingDiverged")
        and "at step" in diverged["error"]
    )
    refused = rows_by_name["unpinned-remote-code"]
    assert refused["decision"] == "failed" and refused["error"].startswith("refused: hub-remote needs remote code")
    assert all(task.data.item["name"] != "unpinned-remote-code" for task in tune_tasks(run))  # no compute spent
    broken = rows_by_name["broken"]
    assert broken["status"] == "failed" and broken["decision"] == "failed" and "no_such_module" in broken["error"]
    for name in (f"tiny-{f}-lora" for f in families):
        row = rows_by_name[name]
        assert row["status"] == "ok" and row["rank"] in range(1, 6) and row["decision"] in ("release", "hold")
        base_row = rows_by_name[row["base"]]
        for metric in (m.key for m in metric_registry.row_metrics()):  # every metric for base and tuned, and the delta
            if metric == "fidelity" and 1 in (row["undetermined_rate"], base_row["undetermined_rate"]):
                continue  # 8 new tokens: no answer long enough to tell its language, no fidelity (checked below)
            assert row[metric] is not None and row[f"base_{metric}"] == base_row[metric]
            assert row[f"delta_{metric}"] == pytest.approx(row[metric] - base_row[metric], abs=1e-4)
        assert row["reasons"] and row["perplexity"] > 1 and row["fertility"] > 0
        assert (row["fidelity"] is None) == (row["undetermined_rate"] == 1)
        assert os.path.exists(os.path.join(row["adapter_uri"], "adapter_model.safetensors"))
        kept = history.load_per_row(row["per_row_uri"])  # what a later run pairs against when this one is released
        assert len(kept["heldout"]["bytes"]) == 7 and "vs_last_release" in row
    host = HOST_PRECISION  # fp32, or bf16 on a CPU that runs it natively (AVX512-BF16/AMX)
    for (
        row
    ) in rows_by_name.values():  # the runtime decision is in every row that ran, and evaluation ran where training did
        if row["status"] == "ok":
            runtime = row["runtime"]
            assert runtime["device"] == runtime["evaluated_on"] == "cpu" and runtime["compute"] == host
            assert runtime["quantization"] == ("nf4" if row["name"] == "tiny-llama-qlora" else "none")
            assert runtime["gpu_lease"]["gpu"] == 0 and 0 < runtime["gpu_lease"]["lease_gb"] <= 80
    baselines = {r["name"]: r["decision"] for r in run.data.leaderboard if r["kind"] == "baseline"}
    assert baselines == {
        **{f"tiny-{f}": "baseline" for f in families},
        "hub-remote": "failed",
        "tiny-llama-big": "baseline",
    }


def test_release_step_publishes_exactly_the_released_candidates(finished):
    _, run, out = finished
    chosen = sorted(r["name"] for r in run.data.leaderboard if r["decision"] == "release")
    not_chosen = sorted(
        r["name"] for r in run.data.leaderboard if r["kind"] == "candidate" and r["decision"] != "release"
    )
    released = run.data.released
    assert chosen and not_chosen and sorted(b["name"] for b in released) == chosen
    published = out / "published"
    assert (
        sorted(p.name for p in published.iterdir()) == chosen
    )  # exactly the released ones: nothing more, nothing less
    assert sorted(os.listdir(os.path.join(run.data.run_root, "release"))) == chosen  # and only they were bundled
    for bundle in released:
        folder = published / bundle["name"]
        assert bundle["published_to"] == str(folder) and bundle["merge_dtype"] == HOST_PRECISION
        if HOST_PRECISION == "fp32":  # in bf16 the release step bounds it by 5 % of the largest logit itself
            assert bundle["merge_max_logit_diff"] < 1e-3
        assert (folder / "adapter" / "adapter_model.safetensors").exists() and (
            folder / "merged" / "config.json"
        ).exists()
        assert (folder / "README.md").read_text(encoding="utf-8").startswith("---\nlibrary_name: peft")
    assert not [name for name in not_chosen if (published / name).exists()]


def test_flow_evaluates_on_the_given_eval_file_and_records_fingerprints(finished):
    _, run, out = finished
    summary = run.data.data
    assert summary["eval_rows"] == 7 and summary["eval_source"].endswith("other_eval.jsonl")
    held = instructions.read_jsonl(summary["eval_uri"])
    assert held == rows(7, start=1000) and summary["eval_fingerprint"] == instructions.fingerprint(held)
    assert summary["train_rows"] == len(instructions.load(str(instructions.BUNDLED)).records)
    assert len(summary["train_fingerprint"]) == 16
    assert {r["name"] for r in run.data.plan["rows"]} >= {"tiny-t5-lora", "broken"} and run.data.plan[
        "total_tokens"
    ] > 0


def test_flow_passes_references_not_weights(finished):
    _, run, _ = finished
    for task in tune_tasks(run):
        train = task.data.train
        if train:
            assert set(train) >= {"adapter_uri", "loss_curve"} and isinstance(train["adapter_uri"], str)
    sizes = [a.size for step in run for task in step for a in task.artifacts]
    assert max(sizes) < 200_000  # no pickled weights or datasets


def _card_payload(html: str) -> str:
    """The card's components as JSON text (Metaflow inlines them base64-encoded in the HTML)."""
    encoded = re.search(r'window.__MF_DATA__\["[^"]+"\] = "([^"]+)"', html).group(1)
    return json.dumps(json.loads(base64.b64decode(encoded)), ensure_ascii=False)


def test_card_shows_the_leaderboard(finished):
    _, run, _ = finished
    from metaflow.cards import get_cards

    payload = _card_payload(get_cards(run["join"].task)[0].get())
    assert "Barbarossa leaderboard" in payload and '"type": "table"' in payload and '"type": "vegaChart"' in payload
    assert all(name in payload for name in ("tiny-t5-lora", "tiny-bloom-lora", "broken", "tiny-llama"))
    assert payload.count('"type": "vegaChart"') == 1 + len(cards.chart_titles())  # loss curves + base-vs-tuned bars
    assert "Sample answers" in payload and '"xOffset"' in payload


def _rendered(task, card_id, tmp_path) -> str:
    from metaflow.cards import get_cards

    return render_in_chromium(get_cards(task, id=card_id)[0].get(), tmp_path)


@pytest.mark.browser
def test_cards_render_their_tables_and_charts_in_a_browser(finished, tmp_path):
    _, run, _ = finished
    join = _rendered(run["join"].task, "leaderboard", tmp_path)
    assert "Barbarossa leaderboard" in join and join.count("<table") >= 2
    assert re.search(r"<td[^>]*>\s*(<[^>]+>\s*)*tiny-llama-lora", join)  # a leaderboard row, as a table cell
    assert join.count('class="marks"') == 1 + len(cards.chart_titles())  # every Vega chart drew an SVG
    start = _rendered(run["start"].task, "data", tmp_path)
    assert "Training data" in start and "<table" in start and start.count('class="marks"') == 1
    assert "«" in start and "### Cavab:" in start  # a decoded example, masked prompt marked
    task = next(t for t in run["tune_small"] if t.data.item["name"] == "tiny-gpt2-lora")
    live = _rendered(task, "training", tmp_path)
    assert "Training tiny-gpt2-lora" in live and 'class="marks"' in live


def test_finetune_tasks_have_a_live_training_card(finished):
    _, run, _ = finished
    from metaflow.cards import get_cards

    task = next(t for t in run["tune_small"] if t.data.item["name"] == "tiny-gpt2-lora")
    payload = _card_payload(get_cards(task, id="training")[0].get())
    assert "Training tiny-gpt2-lora" in payload and '"type": "progressBar"' in payload
    assert '"step": 3' in payload  # the loss curve reached the last step


def test_cli_prints_the_latest_leaderboard_as_json(finished, capsys):
    _, run, _ = finished
    assert cli.main(["leaderboard", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == run.data.leaderboard
    assert cli.main(["leaderboard", "--run", run.id]) == 0
    assert "tiny-gpt2-lora" in capsys.readouterr().out


def test_bad_data_stops_the_flow_in_start(env, tmp_path):
    bad = rows(30)
    bad[16]["output"] = 7
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    status, run = run_flow(
        env, models="tiny", profile="smoke", train_data=str(path), output_root=str(tmp_path / "runs")
    )
    assert status == "failed"
    steps = [step.id for step in run]
    assert steps == ["start"]
    stderr = run["start"].task.stderr
    assert f"{path}: line 17, field 'output': expected a string, got int" in stderr
    assert "Traceback" not in stderr and "Bad data" in stderr  # a user's mistake: one line, no stack
    assert not (tmp_path / "runs").exists()


def test_a_qlora_candidate_runs_on_its_own_and_says_nf4(env, tmp_path):
    """`python flows/finetune_flow.py run --models tiny-llama-qlora --profile smoke`, as the README gives it."""
    status, run = run_flow(env, models="tiny-llama-qlora", profile="smoke", output_root=str(tmp_path / "runs"))
    assert status == "successful", run["end"].task.stderr if run else status
    row = next(r for r in run.data.leaderboard if r["name"] == "tiny-llama-qlora")
    assert row["status"] == "ok" and row["runtime"]["quantization"] == "nf4" and row["eval_loss"] > 0
    assert row["runtime"]["evaluated_on"] == row["runtime"]["device"]


UNFETCHABLE = """
name = "offline"

[[base]]
name = "hub-only"
source = "hf:example-org/never-downloaded"
family = "gpt2"
certainty = "unverified"
licence = "unknown"
params = "124M"

[[candidate]]
name = "hub-only-lora"
base = "hub-only"

[[candidate]]
name = "too-big"
base = "huge"

[[base]]
name = "huge"
source = "tiny:llama"
family = "llama"
certainty = "confirmed"
licence = "none"
params = "400B"
resources = { gpus = 1, gpu_memory_gb = 80, cpu = 2, memory_gb = 8, disk_gb = 1, timeout_hours = 1 }
"""


def test_unfetchable_and_unfittable_models_become_failed_rows_before_any_compute(env, tmp_path):
    """Offline, a hub base is refused with one line in start (no traceback); a 400B base fits no GPU box."""
    rosters = tmp_path / "rosters"
    rosters.mkdir()
    (rosters / "tiny.toml").write_text((ROOT / "configs" / "rosters" / "tiny.toml").read_text())
    (rosters / "offline.toml").write_text(UNFETCHABLE)
    status, run = run_flow(
        {**env, "BARBAROSSA_ROSTERS": str(rosters), "HF_HUB_OFFLINE": "1"},
        models="offline,tiny-gpt2-lora",
        profile="smoke",
        output_root=str(tmp_path / "runs"),
    )
    assert status == "successful", run["end"].task.stderr if run else status
    rows_by_name = {r["name"]: r for r in run.data.leaderboard}
    for name in ("hub-only", "hub-only-lora"):
        error = rows_by_name[name]["error"]
        assert rows_by_name[name]["decision"] == "failed" and error.startswith("refused: weights of hub-only")
        assert "\n" not in error and "BARBAROSSA_WEIGHTS" in error
    assert rows_by_name["too-big"]["error"].startswith("refused: does not fit the A100-80GB box")
    assert rows_by_name["tiny-gpt2-lora"]["status"] == "ok"
    ran = {task.data.item["name"] for task in tune_tasks(run)}
    assert not ran & {"hub-only", "hub-only-lora", "too-big"}  # no compute spent on them


# ---------------------------------------------------------------- the command line on real runs


def test_cli_leaderboard_fits_80_columns_and_wide_prints_everything(finished, monkeypatch):
    import io

    from rich.console import Console

    _, run, _ = finished
    recording = Console(width=80, record=True, file=io.StringIO())
    monkeypatch.setattr(cli, "console", recording)
    names = [row["name"] for row in run.data.leaderboard]
    assert cli.main(["leaderboard", "--run", run.id]) == 0
    text = recording.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert all(
        re.search(rf"^\S*\s+{re.escape(name)}\s", text, re.M) for name in names
    )  # every name whole, in its column
    assert cli.main(["leaderboard", "--run", run.id, "--wide"]) == 0
    wide = recording.export_text()
    assert "…" not in wide and max(map(len, wide.splitlines())) > 80
    assert all(header in wide.splitlines()[1] for header in ("kind", "LoRA", "ppl", "BLEU", "tok/word", "train s"))
    assert all(name in wide for name in names)


@pytest.fixture(scope="module")
def second_run(env, finished, tmp_path_factory):
    """A small run on the bundled data's own held-out split: other held-out data than `finished`'s file."""
    status, run = run_flow(
        env,
        models="tiny-gpt2-lora",
        profile="smoke",
        max_steps=1,
        output_root=str(tmp_path_factory.mktemp("second") / "runs"),
    )
    assert status == "successful", run["end"].task.stderr if run else status
    return run


def test_cli_compares_two_runs_and_warns_when_their_held_out_data_differ(finished, second_run, capsys):
    _, first, _ = finished
    assert cli.main(["leaderboard", "--compare", first.id, "--json"]) == 0  # B: the latest successful run
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["a"]["run"] == first.pathspec and result["b"]["run"] == second_run.pathspec
    assert not result["same_eval_data"] and "different held-out data" in captured.err
    assert result["a"]["eval_fingerprint"] == first.data.data["eval_fingerprint"]
    primary = first.data.settings.policy.primary
    assert result["metrics"][0] == primary
    compared = {r["name"]: r for r in result["rows"]}
    a_row, b_row = ({r["name"]: r for r in run.data.leaderboard}["tiny-gpt2-lora"] for run in (first, second_run))
    row = compared["tiny-gpt2-lora"]
    assert row["a"][primary] == a_row[primary] and row["b"][primary] == b_row[primary]
    assert row["delta"][primary] == pytest.approx(b_row[primary] - a_row[primary], abs=1e-5)
    assert compared["tiny-t5-lora"]["b"] is None and compared["tiny-t5-lora"]["delta"][primary] is None
    assert cli.main(["leaderboard", "--compare", first.id]) == 0
    assert "WARNING: the two runs were measured on different held-out data" in capsys.readouterr().out
    assert cli.main(["leaderboard", "--compare", second_run.id, second_run.id]) == 0  # a run against itself
    out = capsys.readouterr().out
    assert "same held-out data" in out and "WARNING" not in out and "tiny-gpt2-lora" in out and "changed" not in out


def test_cli_chat_answers_piped_prompts_as_the_evaluation_did(finished):
    """`echo "Bakı haqqında iki cümlə yazın." | barbarossa chat --run <id> --model <name>`, as the README gives it.

    Same template, same adapter on the same base, same greedy decoding: the run's own sample answers come back.
    (A separate process, as a user runs it; in this one Metaflow's Runner has already replaced `typing`'s
    parameter check with its vendored typing_extensions', which breaks a first import of torch.export.)
    """
    import subprocess
    import sys
    from pathlib import Path

    _, run, _ = finished
    for name in ("tiny-gpt2-lora", "tiny-gpt2"):  # a candidate, and its untuned base (no adapter)
        samples = run.data.samples[name][:2]
        lines = "".join(f"{s['instruction']}\t{s['input']}\n" for s in samples) + "Bakı haqqında iki cümlə yazın.\n"
        done = subprocess.run(
            [str(Path(sys.executable).with_name("barbarossa")), "chat", "--run", run.id, "--model", name],
            input=lines,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        expected = "".join((s["generated"] or "(empty answer)") + "\n\n" for s in samples)
        assert done.stdout.startswith(expected) and done.stdout[len(expected) :].strip()  # and an answer to the last
        assert name in done.stderr and ("+ adapter" if name.endswith("-lora") else "untuned") in done.stderr


def test_cli_chat_refuses_unknown_and_failed_models_in_one_line(finished, capsys):
    _, run, _ = finished
    assert cli.main(["chat", "--run", run.id, "--model", "no-such-model"]) == 1
    assert cli.main(["chat", "--run", run.id, "--model", "diverges"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "has no model 'no-such-model'; it has" in lines[0] and "tiny-gpt2-lora" in lines[0]
    assert lines[1].startswith("barbarossa chat: diverges failed in") and "TrainingDiverged" in lines[1]


KK_CHOICE = [
    {"question": "Қазақстанның астанасы қай қала?", "choices": ["Астана", "Алматы", "Шымкент"], "answer": 0},
    {"question": "Бір аптада неше күн бар?", "choices": ["бес", "жеті", "он"], "answer": 1},
    {"question": "Қыста қар жауа ма?", "choices": ["иә", "жоқ"], "answer": 0},
]
KK_PAIRS = [
    {"source": "The river flows to the lake.", "target": "Өзен көлге құяды."},
    {"source": "My brother reads a book.", "target": "Ағам кітап оқиды."},
]


def test_a_kazakh_run_uses_the_kk_pack_end_to_end_and_scores_extra_benchmarks(env, tmp_path, capsys):
    """`python flows/finetune_flow.py run --language kk --models tiny --profile smoke`, plus --extra-eval files in
    both benchmark formats."""
    choice = write_jsonl(tmp_path / "kk_choice.jsonl", KK_CHOICE)
    pairs = write_jsonl(tmp_path / "kk_pairs.jsonl", KK_PAIRS)
    status, run = run_flow(
        env,
        language="kk",
        models="tiny",
        profile="smoke",
        output_root=str(tmp_path / "runs"),
        extra_eval=f"{choice},{pairs}",
    )
    assert status == "successful", run["end"].task.stderr if run else status
    summary = run.data.data
    assert summary["language"]["code"] == "kk" and summary["train_source"] == "bundled"
    assert summary["train_rows"] + summary["eval_rows"] == len(
        instructions.load("bundled", language=summary["language"]).records
    )
    assert [b["name"] for b in summary["benchmarks"]] == ["belebele", "flores", "kk_choice", "kk_pairs"]
    rows = run.data.leaderboard
    assert {r["language"] for r in rows} == {"kk"} and all(r["status"] == "ok" for r in rows)
    assert all(r["undetermined_rate"] is not None for r in rows) and "Kazakh answers" in " ".join(
        reason for r in rows if r["kind"] == "candidate" for reason in r["reasons"]
    )
    sample = next(r for r in run.data.samples.values() if r)[0]
    assert sample["instruction"] in {
        r["instruction"] for r in instructions.load("bundled", language=summary["language"]).records
    }
    from metaflow.cards import get_cards

    data_card = _card_payload(get_cards(run["start"].task, id="data")[0].get())
    assert "### Нұсқаулық:" in data_card and "### Жауап:" in data_card and "KAZAKH against RUSSIAN" in data_card
    assert "Benchmarks" in _card_payload(get_cards(run["join"].task, id="leaderboard")[0].get())
    assert cli.main(["leaderboard", "--run", run.id, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    candidate = next(r for r in printed if r["kind"] == "candidate" and r["status"] == "ok")
    for name, metric in (
        ("kk_choice", "accuracy"),
        ("kk_choice", "accuracy_norm"),
        ("kk_pairs", "chrf_into"),
        ("kk_pairs", "chrf_out"),
        ("belebele", "accuracy"),
        ("flores", "chrf_out"),
    ):
        scores = candidate["benchmarks"][name]
        assert {f"{metric}_ci", f"delta_{metric}_ci", f"delta_{metric}_p"} <= set(scores), (name, metric)
        assert scores[f"{metric}_ci"] is not None and scores[f"delta_{metric}_p"] is not None
    assert candidate["benchmarks"]["kk_choice"]["items"] == 3
    assert cli.main(["leaderboard", "--run", run.id]) == 0
    shown = capsys.readouterr().out
    header = next(line for line in shown.splitlines() if "chrF++" in line)
    assert header.split()[-2:] == ["kk", "decision"]  # the fidelity column is named for the language
    assert "Benchmarks" in shown and "kk_choice" in shown
