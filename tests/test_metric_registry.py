"""The metric registry (barbarossa/metric_registry.py): every metric declared once, and a metric registered there
reaches the leaderboard rows, the console tables, the card and the policy without another edit."""

import json
import os

import pytest
from rich.console import Console

from barbarossa import config, metric_registry, reporting
from barbarossa.decide import cards, leaderboard
from barbarossa.metric_registry import Metric

TOY = Metric(
    key="toy_score",
    label="toy score",
    short="toy",
    group="generation",
    higher_is_better=True,
    places=2,
    rankable=True,
    views=frozenset({"row", "console", "compare", "card", "detail", "chart"}),
)


@pytest.fixture
def toy_score():
    """TOY registered for one test, the registry as it was afterwards."""
    metric_registry.register(TOY)
    yield TOY
    del metric_registry._REGISTERED[TOY.key]


def test_the_policy_and_benchmark_directions_are_the_registrys():
    assert dict(config.DIRECTION) == {
        "bits_per_byte": False,
        "eval_loss": False,
        "perplexity": False,
        "chrf": True,
        "bleu": True,
        "fidelity": True,
        "degenerate_rate": False,
        "judge.win_rate_vs_base": True,
        "judge.lc_win_rate_vs_base": True,
    }
    benchmarks = ("accuracy", "accuracy_norm", "chrf_into", "chrf_out")
    assert dict(config.BENCHMARK_DIRECTION) == dict.fromkeys(benchmarks, True)
    assert [m.key for m in metric_registry.row_metrics()][-1] == "fertility" and "fertility" not in config.DIRECTION


def test_each_metric_reads_by_its_own_rule():
    assert metric_registry.format_value("perplexity", 12.3456) == "12.35"
    assert metric_registry.format_value("chrf", -1.25, signed=True) == "-1.2"
    assert metric_registry.format_value("fidelity", 0.9375) == "94%"
    assert metric_registry.format_value("accuracy", 0.083, signed=True) == "+8%"
    assert metric_registry.format_value("not_a_metric", 1.0) == "1.000"
    assert metric_registry.format_value("chrf", None) == "–"
    assert metric_registry.format_interval("bleu", [1.0, 2.25], signed=True) == " [+1.0, +2.2]"
    assert metric_registry.format_interval("bleu", None) == "" and metric_registry.format_p(0.0004) == "p < 0.001"
    assert metric_registry.format_cell(21.25) == "21.250" and metric_registry.format_cell(3) == "3"  # console cells
    assert metric_registry.row_cell({"delta_chrf": 1.5}, "delta_chrf") == "+1.500"
    assert metric_registry.label("fidelity", "Kazakh") == "Kazakh answers"
    assert metric_registry.label("fidelity") == "answers in the language"
    assert metric_registry.short_label("fidelity", "kk") == "kk"
    assert metric_registry.short_label("chrf", "kk") == "chrF++"


def test_a_bad_declaration_is_refused_and_an_unknown_metric_named():
    with pytest.raises(ValueError, match="already registered"):
        metric_registry.register(metric_registry.get("chrf"))
    with pytest.raises(ValueError, match="group must be one of"):
        metric_registry.register(Metric("x", "x", "x", "vibes", True))
    with pytest.raises(ValueError, match="unknown view"):
        metric_registry.register(Metric("x", "x", "x", "judge", True, views=frozenset({"poster"})))
    with pytest.raises(ValueError, match="with a direction"):
        metric_registry.register(Metric("x", "x", "x", "judge", None, rankable=True, views=frozenset({"row"})))
    with pytest.raises(KeyError, match="registered: bits_per_byte, eval_loss"):
        metric_registry.get("x")
    with pytest.raises(KeyError, match="no direction"):
        metric_registry.higher_is_better("fertility")


def task(name: str, kind: str, toy: float, chrf: float = 10.0) -> dict:
    """A task result whose evaluation reported the toy metric beside the usual ones (no per-row numbers)."""
    metrics = {"eval_loss": 2.0, "bits_per_byte": 1.5, "chrf": chrf, "bleu": 1.0, "fidelity": 0.95}
    metrics.update(degenerate_rate=0.05, fertility=2.5, toy_score=toy, language={"code": "az", "name": "Azerbaijani"})
    item = {
        "name": name,
        "kind": kind,
        "base": {"name": "base", "family": "llama"},
        "lora": None if kind == "baseline" else {"r": 8, "alpha": 16, "targets": "attention"},
    }
    return {"item": item, "train": None, "metrics": metrics, "error": None}


def toy_board() -> list[dict]:
    toy_policy = config.Policy(primary="toy_score", min_gain=0.1, must_beat_last_release=False)  # once registered
    return leaderboard.build(
        [task("base", "baseline", 0.5), task("good", "candidate", 0.7), task("meh", "candidate", 0.55)], toy_policy
    )


def text_of(table, wide: bool = False) -> str:
    with open(os.devnull, "w") as devnull:
        console = Console(width=80, record=True, file=devnull)
        reporting.print_wide(table, console) if wide else console.print(table)
        return console.export_text()


def test_a_registered_metric_reaches_the_rows_and_decides_as_the_primary(toy_score):
    rows = {r["name"]: r for r in json.loads(json.dumps(toy_board()))}
    good = rows["good"]
    assert good["toy_score"] == 0.7 and good["base_toy_score"] == 0.5 and good["delta_toy_score"] == pytest.approx(0.2)
    assert good["toy_score_ci"] is None and good["delta_toy_score_p"] is None  # no per-row numbers for it
    assert [good["rank"], rows["meh"]["rank"]] == [1, 2]  # higher is better
    assert good["decision"] == "release" and rows["meh"]["decision"] == "hold"
    assert good["reasons"][0] == (
        "toy score 0.70 vs base 0.50: +0.20 (needs ≥ +0.10), point estimate only (no paired per-row data) ✓"
    )


def test_a_registered_metric_reaches_the_console_tables_and_compare(toy_score):
    rows = toy_board()
    compact = text_of(reporting.leaderboard_table(rows, "T", "bits_per_byte"))
    assert "toy" in compact.splitlines()[1] and "0.700" in compact  # a console metric beside any primary
    ranked = text_of(reporting.leaderboard_table(rows, "T", "toy_score"))
    assert "+0.200" in ranked and ranked.splitlines()[1].split()[2] == "toy"
    wide = text_of(reporting.leaderboard_table(rows, "T", "toy_score", wide=True), wide=True)
    assert "Δ toy" in wide.splitlines()[1]
    record = {"run": "A", "finished_at": "", "primary": "toy_score", "eval_fingerprint": "e", "rows": rows}
    compared = reporting.compare(record, {**record, "run": "B"})
    assert "toy_score" in compared["metrics"] and compared["rows"][0]["delta"]["toy_score"] == 0


def test_a_registered_metric_reaches_the_card(toy_score):
    rows = toy_board()
    summary = {"train_rows": 1, "train_fingerprint": "t", "eval_rows": 1, "eval_fingerprint": "e", "eval_source": "x"}
    parts = [p.render() for p in cards.leaderboard_components(rows, {}, summary, primary="toy_score")]
    compact = next(p for p in parts if p.get("type") == "table")
    assert compact["columns"][4] == "toy score" and compact["columns"][-1] == "toy"
    text = json.dumps(parts, ensure_ascii=False)
    assert "Ranked by **toy score**" in text and "### toy score" in text
    assert cards.chart_titles()["toy_score"] == "toy score"
    charts = [p["spec"] for p in parts if p.get("type") == "vegaChart"]
    toy = next(spec for spec in charts if spec.get("title") == "toy score")
    assert {"candidate": "good", "model": "tuned", "value": 0.7} in toy["data"]["values"]


def test_a_registered_metric_may_be_a_profiles_primary_and_an_unregistered_one_is_refused(tmp_path, toy_score):
    text = (config.profiles_dir() / "cpu.toml").read_text()
    path = tmp_path / "toy.toml"
    path.write_text(text.replace('primary = "bits_per_byte"', 'primary = "toy_score"', 1))
    assert config.load_profile(str(path)).policy.primary == "toy_score"
    assert config.Policy(primary="toy_score").primary == "toy_score"
    path.write_text(text.replace('primary = "bits_per_byte"', 'primary = "toy_scores"', 1))
    with pytest.raises(config.ConfigError, match="primary must be one of .*toy_score"):
        config.load_profile(str(path))
    with pytest.raises(ValueError, match="got 'toy_scores'"):
        config.Policy(primary="toy_scores")


def test_without_its_registration_the_toy_metric_is_refused_everywhere(tmp_path):
    text = (config.profiles_dir() / "cpu.toml").read_text()
    path = tmp_path / "toy.toml"
    path.write_text(text.replace('primary = "bits_per_byte"', 'primary = "toy_score"', 1))
    with pytest.raises(config.ConfigError, match="primary must be one of"):
        config.load_profile(str(path))
    assert "toy_score" not in config.DIRECTION and "toy_score" not in leaderboard.base_row(task("x", "baseline", 0.5))
