"""What Barbarossa prints on the console: the leaderboard and benchmark tables, two runs side by side
(`barbarossa leaderboard --compare`), and the flow's reports (data summary, plan, releases, the final leaderboard).

The flow and the `barbarossa` command line (cli.py) both print through here; plain rows in, rich tables out.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from barbarossa import metric_registry
from barbarossa.config import Policy
from barbarossa.console import console
from barbarossa.decide.cards import judge_cells, judge_headers, judge_models, judged_rows, language_code
from barbarossa.metric_registry import format_cell, format_interval, format_p, format_value, row_cell, short_label

DECISION_STYLE = {"release": "bold green", "hold": "yellow", "failed": "bold red", "baseline": "dim"}
TEXT_COLUMNS = {"name", "kind", "base", "family", "lora", "status", "decision", "metric"}


def table_columns(primary: str, wide: bool = False, code: str | None = None) -> list[tuple[str, str]]:
    """(row key, header) of the leaderboard table: the few that fit 80 columns (the primary and the registry's
    console metrics), or with `wide` every row metric and its Δ; a metric named for the language is headed `code`."""
    if not wide:
        extras = [(m.key, short_label(m.key, code)) for m in metric_registry.shown_in("console") if m.key != primary]
        return [
            ("rank", "#"),
            ("name", "model"),
            (primary, short_label(primary, code)),
            (f"delta_{primary}", "Δ base"),
            *extras,
            ("decision", "decision"),
        ]
    metrics = [
        (key, header)
        for m in metric_registry.row_metrics()
        for key, header in ((m.key, short_label(m.key, code)), (f"delta_{m.key}", f"Δ {short_label(m.key, code)}"))
    ]
    return [
        ("rank", "#"),
        ("name", "model"),
        ("kind", "kind"),
        ("base", "base"),
        ("family", "family"),
        ("lora", "LoRA"),
        ("status", "status"),
        *metrics,
        ("steps", "steps"),
        ("train_seconds", "train s"),
        ("eval_seconds", "eval s"),
        ("decision", "decision"),
    ]


def _table(title: str, columns: list[tuple[str, str]], name_width: int) -> Table:
    """A borderless table (two spaces between columns) whose model column is never wrapped or cut."""
    table = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), collapse_padding=True
    )
    for key, header in columns:
        if key == "name":
            table.add_column(header, no_wrap=True, min_width=name_width)
        else:
            table.add_column(header, justify="left" if key in TEXT_COLUMNS else "right")
    return table


def leaderboard_table(
    rows: list[dict], title: str = "Barbarossa leaderboard", primary: str | None = None, wide: bool = False
) -> Table:
    columns = table_columns(primary or Policy().primary, wide, language_code(rows))
    table = _table(title, columns, max((len(r["name"]) for r in rows), default=5))
    for row in rows:
        table.add_row(*[row_cell(row, key) for key, _ in columns], style=DECISION_STYLE.get(row["decision"], ""))
    return table


def benchmark_table(rows: list[dict], wide: bool = False) -> Table | None:
    """Per model and benchmark metric: the value and its change against the base with p (None: no benchmarks).

    80 columns without the intervals; `wide` adds them (and --json has everything).
    """
    entries = [(row, name, scores) for row in rows for name, scores in (row.get("benchmarks") or {}).items()]
    if not entries:
        return None
    columns = [
        ("name", "model"),
        ("benchmark", "set"),
        ("metric", "metric"),
        ("value", "value"),
        ("delta", "Δ base"),
        ("p", "p"),
    ]
    table = _table("Benchmarks", columns, max(len(r["name"]) for r, _, _ in entries))
    for row, name, scores in entries:
        for metric in (m.key for m in metric_registry.by_group("benchmark") if m.key in scores):
            p = scores.get(f"delta_{metric}_p")
            value, delta = (
                format_value(metric, scores[metric]),
                format_value(metric, scores.get(f"delta_{metric}"), True),
            )
            if wide:
                value += format_interval(metric, scores.get(f"{metric}_ci"))
                delta += format_interval(metric, scores.get(f"delta_{metric}_ci"), True)
            table.add_row(
                row["name"],
                name,
                metric if wide else short_label(metric),
                value,
                delta,
                "–" if p is None else format_p(p),
            )
    return table


def print_wide(table: Table, out: Console | None = None) -> None:
    """A table at its natural width, even past the terminal's: --wide asked for every column, uncut."""
    out = out or console
    natural, width = out.measure(table, options=out.options.update_width(10_000)).maximum, out.width
    out.width = max(width, natural)  # Console.print never renders wider than the console
    try:
        out.print(table, crop=False)
    finally:
        out.width = width


def print_leaderboard(rows: list[dict], primary: str | None = None) -> None:
    """The end of a flow run: the 80-column table, benchmarks and the judge's numbers where there are any, then
    each decision's reasons (`--wide` shows the rest later)."""
    console.print(leaderboard_table(rows, primary=primary))
    benchmarks = benchmark_table(rows)
    if benchmarks:
        console.print(benchmarks)
    judged = judge_table(rows)
    if judged:
        print_wide(judged)
    for row in rows:
        console.print(f"[bold]{row['name']}[/] → {row['decision']}: " + "; ".join(row["reasons"]))


def judge_table(rows: list[dict]) -> Table | None:
    """One line per judged candidate (the card's columns): the registry's judge metrics, win rates with their
    intervals, then pairs, ties, unparsed, calls and tokens; the judge in the title (None: nothing was judged).
    About 100 columns with a 22-character model name."""
    judged = judged_rows(rows)
    if not judged:
        return None
    headers = judge_headers()  # a metric's header on two lines, split after its slash: "win/" over "release"
    columns = [("name", headers[0]), *((header, header.replace("/", "/\n")) for header in headers[1:])]
    table = _table(f"Judge: {judge_models(judged)}", columns, max(len(row["name"]) for row in judged))
    for row in judged:
        table.add_row(*judge_cells(row))
    return table


def print_data_summary(summary: dict) -> None:
    """The flow's start: rows kept and what was removed, and why."""
    console.print(
        f"data: {summary['train_rows']} train rows ({summary['train_fingerprint']}), {summary['eval_rows']} eval rows "
        f"({summary['eval_fingerprint']}, {summary['eval_source']}); "
        f"removed {summary['duplicates_removed']} duplicates, "
        f"{summary['eval_overlap_removed']} rows overlapping the eval set, {_near_copies(summary)}, "
        f"skipped {summary['bad_rows_skipped']} bad rows",
        markup=False,
    )
    for bad in summary["bad_rows"][:10]:
        console.print(f"  skipped {bad['message']}")


def _near_copies(summary: dict) -> str:
    """How many training rows were near-copies of an eval prompt, and by which rule (older summaries lack it)."""
    threshold = summary.get("near_duplicate_threshold")
    if not threshold:
        return "near-copy check off"
    sets = ", ".join(f"{n} of {name}" for name, n in summary["near_duplicates_by_set"].items() if n)
    return f"{summary['near_duplicates_removed']} near-copies of eval prompts (Jaccard ≥ {threshold:g}" + (
        f": {sets})" if sets else ")"
    )


# --------------------------------------------------------------------------- two runs side by side


def compare(a: dict, b: dict) -> dict:
    """Two runs' rows side by side (see history.run_record): per model, each run's value of the primary
    metric(s) and a few others, and B − A; whether both were measured on the same held-out data."""
    extras = [m.key for m in metric_registry.shown_in("compare")]
    metrics = list(dict.fromkeys([a["primary"], b["primary"], *extras]))
    rows_a, rows_b = ({r["name"]: r for r in run["rows"]} for run in (a, b))

    def side(row: dict | None) -> dict | None:
        return (
            None
            if row is None
            else {**{m: row.get(m) for m in metrics}, "rank": row.get("rank"), "decision": row.get("decision")}
        )

    def difference(row_a: dict | None, row_b: dict | None, metric: str) -> float | None:
        if not row_a or not row_b or row_a.get(metric) is None or row_b.get(metric) is None:
            return None
        return round(row_b[metric] - row_a[metric], 5)

    rows = [
        {
            "name": name,
            "a": side(rows_a.get(name)),
            "b": side(rows_b.get(name)),
            "delta": {m: difference(rows_a.get(name), rows_b.get(name), m) for m in metrics},
        }
        for name in dict.fromkeys([*rows_a, *rows_b])
    ]
    same = a["eval_fingerprint"] is not None and a["eval_fingerprint"] == b["eval_fingerprint"]
    warning = (
        None
        if same
        else (
            f"the two runs were measured on different held-out data (eval fingerprint {a['eval_fingerprint']} vs "
            f"{b['eval_fingerprint']}): their metrics are not comparable"
        )
    )
    return {
        "a": {k: v for k, v in a.items() if k != "rows"},
        "b": {k: v for k, v in b.items() if k != "rows"},
        "metrics": metrics,
        "same_eval_data": same,
        "warning": warning,
        "rows": rows,
    }


def print_compare(result: dict) -> None:
    """`compare`'s result as a table: per model, each metric in A, in B and B − A, then the decisions."""
    a, b, primaries = result["a"], result["b"], {result["a"]["primary"], result["b"]["primary"]}
    for label, run in (("A", a), ("B", b)):
        console.print(
            f"{label} = {run['run']} (finished {run['finished_at'][:16]}, ranked by {run['primary']})", markup=False
        )
    if result["warning"]:
        console.print(f"WARNING: {result['warning']}", style="bold red", markup=False)
    else:
        console.print(f"same held-out data (eval fingerprint {a['eval_fingerprint']})", markup=False)
    columns = [("name", "model"), ("metric", "metric"), ("a", "A"), ("b", "B"), ("delta", "Δ B − A")]
    table = _table("", columns, max((len(r["name"]) for r in result["rows"]), default=5))
    for row in result["rows"]:
        for number, metric in enumerate(result["metrics"]):
            values = [format_cell(side.get(metric)) if side else "–" for side in (row["a"], row["b"])]
            label = ("* " if metric in primaries else "") + short_label(metric)
            table.add_row(
                row["name"] if number == 0 else "", label, *values, format_cell(row["delta"][metric], signed=True)
            )
        decisions = [side["decision"] if side else "absent" for side in (row["a"], row["b"])]
        table.add_row("", "decision", *decisions, "" if decisions[0] == decisions[1] else "changed", end_section=True)
    console.print(table)
    console.print("* the ranking metric; Δ = B − A", style="dim", markup=False)


# --------------------------------------------------------------------------- the flow's reports and the listings


def print_plan(result: dict, profile_name: str = "") -> None:
    """`barbarossa plan` and the flow's start: memory and GPU-hours per candidate, then the totals."""
    from barbarossa.planning.plan import describe

    table = Table(title=f"Plan on {result['gpu']}" + (f" (profile {profile_name})" if profile_name else ""))
    for header in (
        "name",
        "params",
        "tokens",
        "GPU-hours",
        "LoRA GB",
        "QLoRA GB",
        "planned GB",
        "declared GB",
        "trainer will run",
    ):
        table.add_column(header, justify="left" if header in ("name", "trainer will run") else "right")
    for row in result["rows"]:
        table.add_row(*describe(row), style="red" if row["fits"] == "no" else "")
    console.print(table)
    console.print(f"total: {result['total_tokens']:,} tokens, {result['total_gpu_hours']:.2f} GPU-hours")
    if result.get("inventory"):
        inventory = result["inventory"]
        wall = inventory["wall_hours"]
        console.print(
            f"on {inventory['gpus']}× {result['gpu']}: [bold]{wall:.1f} h wall-clock[/] ({wall / 24:.1f} days), "
            f"GPUs busy {inventory['busy_gpu_hours']:.1f} GPU-hours for {inventory['work_gpu_hours']:.1f} GPU-hours of "
            "work alone (small models share a GPU by memory, as the local leases do)"
        )
    if result.get("early_stopping_saving"):
        least, most = result["early_stopping_saving"]
        console.print(
            f"early stopping and fail-fast (profile) may save {least:.0%}–{most:.0%} of the steps: a range, "
            "not a promise — it depends on when each candidate stops improving"
        )
    console.print(
        "[dim]LoRA GB: 16-bit weights, no checkpointing; QLoRA GB: nf4 + checkpointing (the least memory); "
        "planned GB: what the trainer will run on this GPU (the runtime decision every task makes)[/]"
    )
    console.print(f"[dim]assumptions: {result['assumptions']}[/]")


def print_release(released: list[dict]) -> None:
    """The flow's release step: what was bundled, where, and whether it was published."""
    if not released:
        console.print("release: no candidate passed the release policy; nothing bundled")
    for bundle in released:
        where = bundle["published_to"] or (
            f"dry run; --publish would copy it to {bundle['would_publish_to']}"
            if bundle["would_publish_to"]
            else "no --release-to target"
        )
        merged = (
            f", merged weights verified (max |Δlogit| {bundle['merge_max_logit_diff']:.1e})" if bundle["merged"] else ""
        )
        console.print(
            f"release: {bundle['name']}: {len(bundle['files'])} files, {bundle['bytes'] / 1e6:.1f} MB at "
            f"{bundle['bundle_uri']}{merged}; {where}"
        )


MODEL_COLUMNS = [
    ("name", "name"),
    ("roster", "roster"),
    ("base_id", "base id"),
    ("certainty", "certainty"),
    ("family", "family"),
    ("params", "params"),
    ("gpu_memory_gb", "GPU GB"),
    ("licence", "licence"),
]


def print_models(rows: list[dict]) -> None:
    """`barbarossa models`: one line per candidate, coloured by how sure its base's facts are."""
    from barbarossa.models.roster import format_params

    table = Table(title=f"Barbarossa models ({len(rows)})")
    for _, header in MODEL_COLUMNS:
        table.add_column(header, justify="right" if header in ("params", "GPU GB") else "left")
    styles = {"confirmed": "green", "inferred": "yellow", "unverified": "dim"}
    for row in rows:
        cells = {**row, "params": format_params(row["params"])}
        table.add_row(*[str(cells[key]) for key, _ in MODEL_COLUMNS], style=styles.get(row["certainty"], ""))
    console.print(table)


def print_languages(rows: list[dict], with_prompt: bool = False) -> None:
    """`barbarossa languages`: one line per pack; `with_prompt`: the (one) pack's prompt rendered below."""
    columns = ("code", "name", "script", "fidelity", "sample_rows", "benchmarks")
    table = Table(*(c.replace("_", " ") for c in columns), title=f"Barbarossa languages ({len(rows)})")
    for row in rows:
        table.add_row(*(", ".join(row[c]) if isinstance(row[c], list) else str(row[c]) for c in columns))
    console.print(table)
    if with_prompt:
        console.print(rows[0]["prompt"], markup=False)
