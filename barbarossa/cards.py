"""Metaflow card components built from leaderboard rows (plain data in, components out)."""

from __future__ import annotations

from barbarossa.leaderboard import format_cell

COLUMNS = ["rank", "name", "kind", "family", "lora", "status", "eval_loss", "delta_eval_loss", "chrf",
           "delta_chrf", "bleu", "az_fidelity", "degenerate_rate", "fertility", "decision"]


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [[format_cell(row.get(column), column.startswith("delta_")) for column in COLUMNS] for row in rows]


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


def leaderboard_components(rows: list[dict], curves: dict[str, list[dict]], data_summary: dict) -> list:
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
    if curves:
        parts += [Markdown("## Training loss"), VegaChart(loss_chart_spec(curves))]
    return parts
