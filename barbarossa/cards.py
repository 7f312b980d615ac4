"""Metaflow card components built from leaderboard rows (plain data in, components out)."""

from __future__ import annotations

from barbarossa.leaderboard import row_cell

COLUMNS = ["rank", "name", "kind", "family", "lora", "status", "eval_loss", "delta_eval_loss", "chrf",
           "delta_chrf", "bleu", "az_fidelity", "degenerate_rate", "fertility", "decision"]


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [[row_cell(row, column) for column in COLUMNS] for row in rows]


def loss_chart_spec(curves: dict[str, list[dict]]) -> dict:
    """Vega-Lite spec: every candidate's training loss on one chart."""
    values = [{"model": name, "step": p["step"], "loss": p["loss"]} for name, curve in curves.items() for p in curve]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 560, "height": 260,
        "data": {"values": values},
        "mark": {"type": "line", "point": False},
        "encoding": {
            "x": {"field": "step", "type": "quantitative"},
            "y": {"field": "loss", "type": "quantitative", "scale": {"zero": False}},
            "color": {"field": "model", "type": "nominal"},
        },
    }


CHART_METRICS = {"eval_loss": "held-out loss (lower is better)", "chrf": "chrF++", "az_fidelity": "Azerbaijani answers",
                 "degenerate_rate": "degenerate answers (lower is better)"}


def base_vs_tuned_spec(rows: list[dict], metric: str, title: str) -> dict:
    """Vega-Lite grouped bars: each candidate next to its untuned base on one metric."""
    values = []
    for row in rows:
        if row["kind"] == "candidate" and row["status"] == "ok" and row.get(f"base_{metric}") is not None:
            values.append({"candidate": row["name"], "model": "base", "value": row[f"base_{metric}"]})
            values.append({"candidate": row["name"], "model": "tuned", "value": row[metric]})
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": title, "width": {"step": 18}, "height": 180,
        "data": {"values": values},
        "mark": "bar",
        "encoding": {
            "x": {"field": "candidate", "type": "nominal", "title": None},
            "xOffset": {"field": "model"},
            "y": {"field": "value", "type": "quantitative", "title": None},
            "color": {"field": "model", "type": "nominal", "scale": {"range": ["#bbbbbb", "#3b7dd8"]}},
        },
    }


def sample_rows(samples: dict[str, list[dict]], per_model: int = 2) -> list[list[str]]:
    """Prompt, reference and each model's answer side by side, one row per (prompt, model)."""
    out = []
    for name, items in samples.items():
        for sample in items[:per_model]:
            prompt = sample["instruction"] + (f" — {sample['input']}" if sample["input"] else "")
            out.append([prompt[:160], sample["reference"][:200], name, sample["generated"][:200] or "(empty)"])
    return sorted(out, key=lambda r: (r[0], r[2]))


def extra_set_rows(rows: list[dict]) -> list[list[str]]:
    """One line per model and user eval set (and the main set's user metrics), for the leaderboard card."""
    from barbarossa.leaderboard import format_cell

    lines = []
    core = ("eval_loss", "chrf", "bleu", "az_fidelity")
    for row in rows:
        if row.get("custom"):
            lines.append([row["name"], "(held-out)", "", "", "", "", ", ".join(f"{k} {v}" for k, v in row["custom"].items())])
        for name, scores in (row.get("extra_sets") or {}).items():
            others = ", ".join(f"{k} {v}" for k, v in scores.items() if k not in core + ("rows", "degenerate_rate"))
            lines.append([row["name"], name, *(format_cell(scores.get(k)) for k in core), others])
    return lines


def leaderboard_components(rows: list[dict], curves: dict[str, list[dict]], data_summary: dict,
                           samples: dict[str, list[dict]] | None = None) -> list:
    from metaflow.cards import Markdown, Table, VegaChart

    released = [r["name"] for r in rows if r["decision"] == "release"]
    parts = [
        Markdown("# Barbarossa leaderboard"),
        Markdown(
            f"Trained on **{data_summary['train_rows']}** rows (`{data_summary['train_fingerprint']}`), "
            f"evaluated on **{data_summary['eval_rows']}** rows (`{data_summary['eval_fingerprint']}`, "
            f"{data_summary['eval_source']}). Release: **{', '.join(released) or 'none'}**."
        ),
        Table(table_rows(rows), headers=COLUMNS),
        Markdown("## Why"),
        Markdown("\n".join(f"- **{r['name']}** ({r['decision']}): " + "; ".join(r["reasons"]) for r in rows)),
    ]
    parts.append(Markdown("## Base vs tuned"))
    parts += [VegaChart(base_vs_tuned_spec(rows, metric, title)) for metric, title in CHART_METRICS.items()]
    if curves:
        parts += [Markdown("## Training loss"), VegaChart(loss_chart_spec(curves))]
    extra = extra_set_rows(rows)
    if extra:
        parts += [Markdown("## Other eval sets and metrics"),
                  Table(extra, headers=["model", "set", "held-out loss", "chrF++", "BLEU", "az answers", "other metrics"])]
    if samples:
        parts += [Markdown("## Sample answers"),
                  Table(sample_rows(samples), headers=["prompt", "reference", "model", "answer"])]
    return parts


def histogram_spec(bins: list[dict]) -> dict:
    """Vega-Lite spec: rows per length bin, one panel per field."""
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": bins},
        "mark": "bar",
        "width": 180, "height": 140,
        "encoding": {
            "column": {"field": "field", "type": "nominal", "title": None},
            "x": {"field": "words", "type": "ordinal", "sort": {"field": "order"}, "title": "words"},
            "y": {"field": "rows", "type": "quantitative"},
        },
    }


def data_components(summary: dict, train_bins: list[dict], examples: list[str]) -> list:
    """The start step's data card: counts, what was dropped and why, lengths, and masking made visible."""
    from metaflow.cards import Markdown, Table, VegaChart

    counts = [["training rows", summary["train_rows"]], ["held-out rows", summary["eval_rows"]],
              ["exact duplicates removed", summary["duplicates_removed"]],
              ["training rows removed (prompt also in the eval set)", summary["eval_overlap_removed"]],
              ["bad rows skipped", summary["bad_rows_skipped"]]]
    parts = [Markdown("# Training data"),
             Markdown(f"Source `{summary['train_source']}` (fingerprint `{summary['source_fingerprint']}`); "
                      f"eval: {summary['eval_source']}."),
             Table([[k, str(v)] for k, v in counts], headers=["", "rows"])]
    if summary["bad_rows"]:
        parts += [Markdown("## Bad rows (first 10)"),
                  Table([[str(b["message"])] for b in summary["bad_rows"][:10]], headers=["problem"])]
    parts += [Markdown("## Lengths (training split)"), VegaChart(histogram_spec(train_bins))]
    if examples:
        parts.append(Markdown("## What the loss sees\nThe prompt, between « and », is masked: the loss is on the "
                              "answer after it (and its end-of-sequence token)."))
        parts += [Markdown(f"```\n{text}\n```") for text in examples]
    return parts


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

    def update(self, step: int, curve: list[dict]) -> None:
        self.progress.update(step, metadata=f"loss {curve[-1]['loss']:.4f}" if curve else None)
        self.chart.update(loss_chart_spec({self.name: curve}))
        self.card.refresh()
