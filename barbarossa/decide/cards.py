"""Metaflow card components built from leaderboard rows (plain data in, components out)."""

from __future__ import annotations

from barbarossa import metric_registry
from barbarossa.decide.leaderboard import language_name
from barbarossa.evaluate import langid
from barbarossa.judge.numbers import AGAINST, LENGTH_MOVE
from barbarossa.metric_registry import format_cell, format_interval, format_p, format_value, row_cell


def language_code(rows: list[dict]) -> str:
    """The run's language code (rows carry it; rows from before language packs are Azerbaijani)."""
    return next((r["language"] for r in rows if r.get("language")), "az")


def compact_headers(primary: str, code: str = "az") -> list[str]:
    """The compact table's headers: the primary's columns, then the registry's card metrics (named for `code`)."""
    extras = [metric_registry.short_label(m.key, code) for m in metric_registry.shown_in("card")]
    return ["#", "model", "base", "decision", metric_registry.label(primary), "95 % CI", "Δ vs base", "p", *extras]


def compact_rows(rows: list[dict], primary: str) -> list[list[str]]:
    """The leaderboard at a glance: narrow enough for 60 rows on one card; the detail tables carry the rest."""
    extras = [m.key for m in metric_registry.shown_in("card")]
    out = []
    for row in rows:
        out.append(
            [
                row_cell(row, "rank"),
                row["name"],
                row["base"] if row["kind"] == "candidate" else "(untuned)",
                row["decision"],
                format_value(primary, row.get(primary)),
                format_interval(primary, row.get(f"{primary}_ci")).strip(),
                format_value(primary, row.get(f"delta_{primary}"), signed=True) if row["kind"] == "candidate" else "",
                format_p(row[f"delta_{primary}_p"]) if row.get(f"delta_{primary}_p") is not None else "",
                *(format_value(metric, row.get(metric)) for metric in extras),
            ]
        )
    return out


def grouped_by_base(rows: list[dict]) -> list[dict]:
    """Rows ordered base by base: the untuned base first, then its candidates by rank; failures without a base last."""

    def key(row):
        return (row["base"], row["kind"] != "baseline", row.get("rank") or 10**6, row["name"])

    return sorted(rows, key=key)


def metric_detail_rows(rows: list[dict], metric: str) -> list[list[str]]:
    """One metric for every model, grouped by base: value, interval, and the paired difference from the base."""
    out = []
    for row in grouped_by_base(rows):
        if row.get(metric) is None:
            continue
        candidate = row["kind"] == "candidate"
        out.append(
            [
                row["base"],
                row["name"],
                format_value(metric, row[metric]),
                format_interval(metric, row.get(f"{metric}_ci")).strip(),
                format_value(metric, row.get(f"delta_{metric}"), signed=True) if candidate else "",
                format_interval(metric, row.get(f"delta_{metric}_ci"), signed=True).strip() if candidate else "",
                format_p(row[f"delta_{metric}_p"]) if candidate and row.get(f"delta_{metric}_p") is not None else "",
            ]
        )
    return out


DETAIL_HEADERS = ["base", "model", "value", "95 % CI", "Δ vs base", "Δ 95 % CI", "p"]


def loss_chart_spec(curves: dict[str, list[dict]], bases: dict[str, str] | None = None) -> dict:
    """Vega-Lite spec: every candidate's training loss; one small panel per base when `bases` maps names to bases
    (30 lines on one chart cannot be told apart; five per panel can)."""
    values = [
        {"model": name, "base": (bases or {}).get(name, ""), "step": p["step"], "loss": p["loss"]}
        for name, curve in curves.items()
        for p in curve
    ]
    if bases:
        return {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "data": {"values": values},
            "facet": {"field": "base", "type": "nominal", "title": None},
            "columns": 3,
            "resolve": {"scale": {"color": "independent", "y": "independent"}},
            "spec": {
                "width": 220,
                "height": 130,
                "mark": {"type": "line", "point": False},
                "encoding": {
                    "x": {"field": "step", "type": "quantitative"},
                    "y": {"field": "loss", "type": "quantitative", "scale": {"zero": False}},
                    "color": {
                        "field": "model",
                        "type": "nominal",
                        "legend": {"orient": "bottom", "columns": 2, "title": None, "labelLimit": 200},
                    },
                },
            },
        }
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 560,
        "height": 260,
        "data": {"values": values},
        "mark": {"type": "line", "point": False},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": "loss", "type": "quantitative", "scale": {"zero": False}},
            "color": {"field": "model", "type": "nominal"},
        },
    }


def chart_titles(language: str | None = None) -> dict[str, str]:
    """{metric: title} of the card's base-vs-tuned charts (the registry's chart metrics), named for `language`."""
    return {
        m.key: metric_registry.label(m.key, language) + (" (lower is better)" if m.higher_is_better is False else "")
        for m in metric_registry.shown_in("chart")
    }


def base_vs_tuned_spec(rows: list[dict], metric: str, title: str) -> dict:
    """Vega-Lite grouped bars: each candidate next to its untuned base on one metric."""
    values = []
    for row in rows:
        if row["kind"] == "candidate" and row["status"] == "ok" and row.get(f"base_{metric}") is not None:
            values.append({"candidate": row["name"], "model": "base", "value": row[f"base_{metric}"]})
            values.append({"candidate": row["name"], "model": "tuned", "value": row[metric]})
    step = max(6, min(18, 900 // max(1, len(values))))  # 60 candidates still fit the card's width
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title,
        "width": {"step": step},
        "height": 180,
        "data": {"values": values},
        "mark": "bar",
        "encoding": {
            "x": {
                "field": "candidate",
                "type": "nominal",
                "title": None,
                "axis": {"labelAngle": -60, "labelLimit": 160},
            },
            "xOffset": {"field": "model"},
            "y": {"field": "value", "type": "quantitative", "title": None},
            "color": {"field": "model", "type": "nominal", "scale": {"range": ["#bbbbbb", "#3b7dd8"]}},
        },
    }


def clipped(text: str | None, limit: int = 200) -> str:
    """A text cut to `limit` characters for a card cell, an ellipsis saying where; an empty one visible as such."""
    if not text:
        return "(empty)"
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def sample_rows(samples: dict[str, list[dict]], per_model: int = 2) -> list[list[str]]:
    """Prompt, reference and each model's answer side by side, one row per (prompt, model)."""
    out = []
    for name, items in samples.items():
        for sample in items[:per_model]:
            prompt = sample["instruction"] + (f" — {sample['input']}" if sample["input"] else "")
            out.append([clipped(prompt, 160), clipped(sample["reference"]), name, clipped(sample["generated"])])
    return sorted(out, key=lambda r: (r[0], r[2]))


def benchmark_rows(rows: list[dict]) -> list[list[str]]:
    """Per model, benchmark and metric: value with interval, paired change against the base with interval and p."""
    out = []
    for row in grouped_by_base(rows):
        candidate = row["kind"] == "candidate"
        for name, scores in sorted((row.get("benchmarks") or {}).items()):
            for metric in (m.key for m in metric_registry.by_group("benchmark") if m.key in scores):
                p = scores.get(f"delta_{metric}_p")
                out.append(
                    [
                        row["base"],
                        row["name"],
                        name,
                        metric,
                        format_value(metric, scores[metric]),
                        format_interval(metric, scores.get(f"{metric}_ci")).strip(),
                        format_value(metric, scores.get(f"delta_{metric}"), signed=True) if candidate else "",
                        format_interval(metric, scores.get(f"delta_{metric}_ci"), signed=True).strip()
                        if candidate
                        else "",
                        format_p(p) if candidate and p is not None else "",
                    ]
                )
    return out


def extra_set_rows(rows: list[dict]) -> list[list[str]]:
    """One line per model and user eval set (and the main set's user metrics), for the leaderboard card: the
    registry's extra-set metrics as columns, the set's other scores listed (its size and degenerate rate left out)."""
    lines = []
    core = tuple(m.key for m in metric_registry.shown_in("extra_sets"))
    for row in rows:
        if row.get("custom"):
            custom = ", ".join(f"{k} {v}" for k, v in row["custom"].items())
            lines.append([row["name"], "(held-out)", *([""] * len(core)), custom])
        for name, scores in (row.get("extra_sets") or {}).items():
            others = ", ".join(
                f"{k} {v}"
                for k, v in scores.items()
                if k not in core + ("rows", "degenerate_rate") and not k.endswith("_ci")
            )
            lines.append([row["name"], name, *(format_cell(scores.get(k)) for k in core), others])
    return lines


# --------------------------------------------------------------------------- the judge (barbarossa/judge/)

# What judging a candidate counted and cost, after the registry's judge metrics: (row key, header).
JUDGE_COUNTS = (
    ("judge.pairs", "pairs"),
    ("judge.ties", "ties"),
    ("judge.unparsed", "unparsed"),
    ("judge.calls", "calls"),
    ("judge.tokens", "tokens"),
    ("judge.seconds", "s"),
)
JUDGE_EXAMPLE_HEADERS = [
    "model",
    "instruction",
    "candidate's answer",
    "base's answer",
    "candidate shown first",
    "candidate shown second",
    "outcome",
]


def judged_rows(rows: list[dict]) -> list[dict]:
    """The rows a judge compared: a row without judging has no `judge.*` field."""
    return [row for row in rows if row.get("judge.model")]


def judge_models(rows: list[dict]) -> str:
    """The judge(s) named on the judged rows (one per run), for a title."""
    return ", ".join(dict.fromkeys(row["judge.model"] for row in judged_rows(rows)))


def judge_headers() -> list[str]:
    """The judge table's headers (console and card): the model, the registry's judge metrics, the counts."""
    return ["model", *(m.short for m in metric_registry.by_group("judge")), *(header for _, header in JUDGE_COUNTS)]


def judge_cells(row: dict) -> list[str]:
    """A judged candidate's line: each registry judge metric by its rule, with its interval where it has one
    ('–': not compared, or no verdict parsed), then what was judged and what it cost."""
    rates = [
        format_value(m.key, row.get(m.key)) + format_interval(m.key, row.get(f"{m.key}_ci"))
        for m in metric_registry.by_group("judge")
    ]
    counts = ["–" if row.get(key) is None else f"{row[key]:,}" for key, _ in JUDGE_COUNTS]
    return [row["name"], *rates, *counts]


def length_sentences(rows: list[dict]) -> list[str]:
    """A sentence per comparison whose length-controlled rate is more than LENGTH_MOVE from the raw one: there the
    raw rate rewards longer answers (or punishes shorter ones) rather than better ones."""
    out = []
    for row in judged_rows(rows):
        for against in AGAINST:
            if not row.get(f"judge.length_moved_vs_{against}"):
                continue
            raw, controlled = f"judge.win_rate_vs_{against}", f"judge.lc_win_rate_vs_{against}"
            out.append(
                f"**{row['name']}**: {metric_registry.label(raw)} {format_value(raw, row.get(raw))} but "
                f"{format_value(controlled, row.get(controlled))} length-controlled (more than "
                f"{LENGTH_MOVE * 100:.0f} points apart): the judge's preference follows answer length"
            )
    return out


def judge_example_rows(rows: list[dict], per_model: int = 3) -> list[list[str]]:
    """A few pairs each judged candidate was judged on against its base, side by side: the instruction, both
    answers, the verdict in each order read for the candidate, and the outcome."""
    out = []
    for row in judged_rows(rows):
        for example in (row.get("judge.examples") or [])[:per_model]:
            first, second = example["verdicts"]
            out.append(
                [
                    row["name"],
                    clipped(example["instruction"], 160),
                    clipped(example["candidate"]),
                    clipped(example["base"]),
                    verdict_text(first, candidate_first=True),
                    verdict_text(second, candidate_first=False),
                    example["outcome"],
                ]
            )
    return out


def verdict_text(label: str | None, candidate_first: bool) -> str:
    """A judge's label with what it means for the candidate: A names the answer shown first, B the second, C a tie."""
    if label is None:
        return "unparsed"
    first, second = ("candidate", "base") if candidate_first else ("base", "candidate")
    return f"{label}: " + {"A": first, "B": second, "C": "tie"}.get(label, "?")


def judge_components(rows: list[dict]) -> list:
    """The card's judge section (nothing when no row was judged): the numbers, a sentence where length moves the
    rate, and the judged examples side by side."""
    from metaflow.cards import Markdown, Table

    judged = judged_rows(rows)
    if not judged:
        return []
    parts = [
        Markdown(
            f"## The judge: {judge_models(judged)}\nWin rates of each judged candidate's greedy answers against its "
            "untuned base's and its last release's (each pair judged in both orders; a tie counts half), with "
            "bootstrap intervals over prompts; LC: length-controlled. –: not compared, or no verdict parsed."
        ),
        Table([judge_cells(row) for row in judged], headers=judge_headers()),
    ]
    sentences = length_sentences(judged)
    if sentences:
        parts.append(Markdown("\n".join(f"- {sentence}" for sentence in sentences)))
    examples = judge_example_rows(judged)
    if examples:
        parts += [Markdown("### Judged pairs against the base"), Table(examples, headers=JUDGE_EXAMPLE_HEADERS)]
    return parts


def leaderboard_components(
    rows: list[dict],
    curves: dict[str, list[dict]],
    data_summary: dict,
    samples: dict[str, list[dict]] | None = None,
    primary: str = "bits_per_byte",
) -> list:
    """The join step's card: a compact table, the reasons, per-metric detail grouped by base, charts, the judge's
    numbers and examples, samples."""
    from metaflow.cards import Markdown, Table, VegaChart

    released = [r["name"] for r in rows if r["decision"] == "release"]
    parts = [
        Markdown("# Barbarossa leaderboard"),
        Markdown(
            f"Trained on **{data_summary['train_rows']}** rows (`{data_summary['train_fingerprint']}`), "
            f"evaluated on **{data_summary['eval_rows']}** rows (`{data_summary['eval_fingerprint']}`, "
            f"{data_summary['eval_source']}). Ranked by **{metric_registry.label(primary)}**; intervals are 95 % "
            f"bootstrap intervals over eval rows, Δ and p are paired against the untuned base. "
            f"Release: **{', '.join(released) or 'none'}**."
        ),
        Table(compact_rows(rows, primary), headers=compact_headers(primary, language_code(rows))),
        Markdown("## Why"),
        Markdown("\n".join(f"- **{r['name']}** ({r['decision']}): " + "; ".join(r["reasons"]) for r in rows)),
    ]
    parts.append(Markdown("## Base vs tuned"))
    titles = chart_titles(language_name(rows[0]) if rows else None)
    parts += [VegaChart(base_vs_tuned_spec(rows, metric, title)) for metric, title in titles.items()]
    if curves:
        bases = {r["name"]: r["base"] for r in rows}
        parts += [Markdown("## Training loss"), VegaChart(loss_chart_spec(curves, bases))]
    parts += [Markdown("## Every metric, grouped by base"), *detail_components(rows)]
    bench = benchmark_rows(rows)
    if bench:
        parts += [
            Markdown(
                "## Benchmarks\nAccuracy (multiple choice by log-likelihood; _norm: per byte of the choice) "
                "and chrF++ of greedy translations (into: English → the language; out: back), with 95 % "
                "bootstrap intervals over items; Δ and p paired against the untuned base."
            ),
            Table(bench, headers=["base", "model", "benchmark", "metric", *DETAIL_HEADERS[2:]]),
        ]
    parts += judge_components(rows)
    parts += extra_set_components(rows)
    if samples:
        parts += [
            Markdown("## Sample answers"),
            Table(sample_rows(samples), headers=["prompt", "reference", "model", "answer"]),
        ]
    return parts


def detail_components(rows: list[dict]) -> list:
    """A heading and a table per registry detail metric that any row has, headed for the run's language."""
    from metaflow.cards import Markdown, Table

    parts = []
    for metric in (m.key for m in metric_registry.shown_in("detail")):
        detail = metric_detail_rows(rows, metric)
        if detail:
            label = metric_registry.label(metric, language_name(rows[0]))
            parts += [Markdown(f"### {label}"), Table(detail, headers=DETAIL_HEADERS)]
    return parts


def extra_set_components(rows: list[dict]) -> list:
    """The user's extra eval sets and metrics (nothing when there are none)."""
    from metaflow.cards import Markdown, Table

    extra = extra_set_rows(rows)
    if not extra:
        return []
    code = language_code(rows)
    columns = [metric_registry.label(m.key, code) for m in metric_registry.shown_in("extra_sets")]
    headers = ["model", "set", *columns, "other metrics"]
    return [Markdown("## Other eval sets and metrics"), Table(extra, headers=headers)]


def histogram_spec(bins: list[dict]) -> dict:
    """Vega-Lite spec: rows per length bin, one panel per field."""
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": bins},
        "mark": "bar",
        "width": 180,
        "height": 140,
        "encoding": {
            "column": {"field": "field", "type": "nominal", "title": None},
            "x": {"field": "words", "type": "ordinal", "sort": {"field": "order"}, "title": "words"},
            "y": {"field": "rows", "type": "quantitative"},
        },
    }


def _near_rule(summary: dict) -> str:
    threshold = summary.get("near_duplicate_threshold") or 0
    return f"Jaccard ≥ {threshold:g} of 5-character shingles" if threshold else "check off"


def data_components(summary: dict, train_bins: list[dict], examples: list[str]) -> list:
    """The start step's data card: counts, what was dropped and why, lengths, and masking made visible."""
    from metaflow.cards import Markdown, Table, VegaChart

    counts = [
        ["training rows", summary["train_rows"]],
        ["held-out rows", summary["eval_rows"]],
        ["exact duplicates removed", summary["duplicates_removed"]],
        ["training rows removed (prompt also in the eval set)", summary["eval_overlap_removed"]],
        [
            f"training rows removed (near-copy of an eval prompt, {_near_rule(summary)})",
            summary.get("near_duplicates_removed", 0),
        ],
        ["bad rows skipped", summary["bad_rows_skipped"]],
    ]
    parts = [
        Markdown("# Training data"),
        Markdown(
            f"Source `{summary['train_source']}` (fingerprint `{summary['source_fingerprint']}`); "
            f"eval: {summary['eval_source']}."
        ),
        Table([[k, str(v)] for k, v in counts], headers=["", "rows"]),
    ]
    if summary.get("train_mix"):
        parts += [
            Markdown("## Mix of training sources (in order; a row an earlier source has is dropped)"),
            Table(
                [
                    [m["source"], str(m["rows"]), str(m["repeats_dropped"]), m["fingerprint"]]
                    for m in summary["train_mix"]
                ],
                headers=["source", "rows", "repeats dropped", "fingerprint"],
            ),
        ]
    if summary["bad_rows"]:
        parts += [
            Markdown("## Bad rows (first 10)"),
            Table([[str(b["message"])] for b in summary["bad_rows"][:10]], headers=["problem"]),
        ]
    pairs = summary.get("near_duplicate_examples") or []
    if pairs:
        parts += [
            Markdown(f"## Near-copies removed from training (the {len(pairs)} least similar)"),
            Table(
                [[p["eval_set"], p["eval_prompt"], p["train_prompt"], f"{p['similarity']:.2f}"] for p in pairs],
                headers=["eval set", "eval prompt", "removed training prompt", "similarity"],
            ),
        ]
    parts += [Markdown("## Lengths (training split)"), VegaChart(histogram_spec(train_bins))]
    parts += language_components(summary)
    if examples:
        parts.append(
            Markdown(
                "## What the loss sees\nThe prompt, between « and », is masked: the loss is on the "
                "answer after it (and its end-of-sequence token)."
            )
        )
        parts += [Markdown(f"```\n{text}\n```") for text in examples]
    return parts


def language_components(summary: dict) -> list:
    """The run's language pack on the data card: the template's headers and how fidelity is judged; the benchmarks."""
    from metaflow.cards import Markdown, Table

    language = summary.get("language")
    parts = []
    if language:
        template, identify = language["template"], language["identify"]
        parts += [
            Markdown(f"## Language: {language['name']} (`{language['code']}`)"),
            Table(
                [
                    ["instruction header", template["instruction_header"]],
                    ["input header", template["input_header"]],
                    ["response header", template["response_header"]],
                    ["preamble", template["preamble"]],
                    [
                        "fidelity",
                        f"{identify['target']} against {', '.join(identify['neighbours'])} ({identify['method']}); "
                        f"an answer of fewer than {langid.MIN_WORDS} words is undetermined, not guessed",
                    ],
                ],
                headers=["", ""],
            ),
        ]
    if summary.get("benchmarks"):
        parts += [
            Markdown("## Benchmarks"),
            Table(
                [[b["name"], b["kind"], str(b["items"]), b["source"], b["fingerprint"]] for b in summary["benchmarks"]],
                headers=["name", "kind", "items", "source", "fingerprint"],
            ),
        ]
    return parts


def training_chart_spec(name: str, curve: list[dict], dev: dict | None = None) -> dict:
    """The live card's chart: training loss; with early stopping, dev bits per byte under it, the untuned base's
    as a dashed line and the best evaluation (the adapter that is kept) marked."""
    if not dev:
        return loss_chart_spec({name: curve})
    points = [{"step": p["step"], "bits_per_byte": p["bits_per_byte"]} for p in dev["curve"]]
    layers = [
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": {"field": "step", "type": "quantitative"},
                "y": {
                    "field": "bits_per_byte",
                    "type": "quantitative",
                    "scale": {"zero": False},
                    "title": "dev bits per byte",
                },
            },
        }
    ]
    if dev.get("best_step"):
        layers.append(
            {
                "transform": [{"filter": f"datum.step == {dev['best_step']}"}],
                "mark": {"type": "point", "size": 140, "shape": "diamond", "filled": True, "color": "#d62728"},
                "encoding": {
                    "x": {"field": "step", "type": "quantitative"},
                    "y": {"field": "bits_per_byte", "type": "quantitative"},
                    "tooltip": [{"field": "step", "title": "best step"}],
                },
            }
        )
    if dev.get("base") is not None:
        layers.append(
            {
                "data": {"values": [{"base": dev["base"]}]},
                "mark": {"type": "rule", "strokeDash": [4, 4]},
                "encoding": {"y": {"field": "base", "type": "quantitative"}},
            }
        )
    loss = loss_chart_spec({name: curve})
    loss.pop("$schema")
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "vconcat": [loss, {"width": 560, "height": 160, "data": {"values": points}, "layer": layers}],
    }


class LiveTraining:
    """A finetune task's live card: progress bar and loss curve, refreshed as training logs.

    `update` is the trainer's progress callback, so the trainer knows nothing of Metaflow.
    """

    def __init__(self, card, name: str, steps: int):
        from metaflow.cards import Markdown, ProgressBar, VegaChart

        self.card, self.name = card, name
        self.progress = ProgressBar(max=steps, label=f"{name}: optimizer steps")
        self.chart = VegaChart(loss_chart_spec({name: []}))
        card.extend([Markdown(f"# Training {name}"), self.progress, self.chart])
        card.refresh()

    def update(self, step: int, curve: list[dict], dev: dict | None = None) -> None:
        self.progress.update(step, metadata=f"loss {curve[-1]['loss']:.4f}" if curve else None)
        self.chart.update(training_chart_spec(self.name, curve, dev))
        self.card.refresh()
