"""`barbarossa` command line: read leaderboards of past runs, compare runs, chat with a model, list rosters.

    barbarossa leaderboard [--run ID] [--wide] [--json] [--namespace NS]
    barbarossa leaderboard --compare RUN_A [RUN_B] [--json]     (RUN_B: the latest successful run)
    barbarossa chat [--run ID] --model NAME [--max-new-tokens N] (prompts from stdin, one a line, or typed)
    barbarossa models [--models SPEC] [--json]
    barbarossa languages [--language CODE] [--json]
    barbarossa plan [--models SPEC] [--profile gpu] [--gpu A100-80GB | --gpus 4xA100-80GB] [--json]
    barbarossa fetch [--models SPEC] [--benchmark hf:OWNER/DATASET@REV:FILE ...] --to ROOT

Runs are looked up in the Metaflow namespace of USERNAME; where it is unset the
Makefile's rule applies (your login name, or "barbarossa" for root), so the CLI
finds the runs `make run` made. Runs of a deployment (Argo Workflows, Step Functions) live
in its production namespace: `--namespace production:<token>`, or `--namespace any`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import unicodedata

from rich import box
from rich.console import Console
from rich.table import Table

from barbarossa import storage
from barbarossa.console import console
from barbarossa.decide.leaderboard import (
    COMPARED,
    DEFAULT_POLICY,
    format_cell,
    row_cell,
    show,
    show_interval,
    show_p,
    upgraded,
)
from barbarossa.evaluate.stats import BENCHMARK_METRICS

FLOW_NAME = "FinetuneFlow"
DECISION_STYLE = {"release": "bold green", "hold": "yellow", "failed": "bold red", "baseline": "dim"}
SHORT = {
    "bits_per_byte": "bits/byte",
    "eval_loss": "loss",
    "perplexity": "ppl",
    "chrf": "chrF++",
    "bleu": "BLEU",
    "fidelity": "lang",
    "degenerate_rate": "loops",
    "fertility": "tok/word",
}
COMPACT_EXTRAS = ("chrf", "fidelity")  # beside the primary metric in the 80-column table
COMPARE_EXTRAS = ("eval_loss", "chrf", "fidelity", "degenerate_rate")  # beside the primary in --compare
TEXT_COLUMNS = {"name", "kind", "base", "family", "lora", "status", "decision", "metric"}


def short(metric: str) -> str:
    return SHORT.get(metric, metric)


def table_columns(primary: str, wide: bool = False) -> list[tuple[str, str]]:
    """(row key, header) of the leaderboard table: the few that fit 80 columns, or with `wide` everything."""
    if not wide:
        extras = [(m, short(m)) for m in COMPACT_EXTRAS if m != primary]
        return [
            ("rank", "#"),
            ("name", "model"),
            (primary, short(primary)),
            (f"delta_{primary}", "Δ base"),
            *extras,
            ("decision", "decision"),
        ]
    metrics = [(key, header) for m in COMPARED for key, header in ((m, short(m)), (f"delta_{m}", f"Δ {short(m)}"))]
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
    code = next((r["language"] for r in rows if r.get("language")), "az")  # the fidelity column is named for it
    columns = [
        (key, header.replace(short("fidelity"), code))
        for key, header in table_columns(primary or DEFAULT_POLICY["primary"], wide)
    ]
    table = _table(title, columns, max((len(r["name"]) for r in rows), default=5))
    for row in rows:
        table.add_row(*[row_cell(row, key) for key, _ in columns], style=DECISION_STYLE.get(row["decision"], ""))
    return table


BENCHMARK_SHORT = {"accuracy": "acc", "accuracy_norm": "acc/byte", "chrf_into": "chrF into", "chrf_out": "chrF out"}


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
        for metric in (m for m in BENCHMARK_METRICS if m in scores):
            p = scores.get(f"delta_{metric}_p")
            value, delta = show(metric, scores[metric]), show(metric, scores.get(f"delta_{metric}"), True)
            if wide:
                value += show_interval(metric, scores.get(f"{metric}_ci"))
                delta += show_interval(metric, scores.get(f"delta_{metric}_ci"), True)
            table.add_row(
                row["name"],
                name,
                metric if wide else BENCHMARK_SHORT[metric],
                value,
                delta,
                "–" if p is None else show_p(p),
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
    """The end of a flow run: the 80-column table, then each decision's reasons (`--wide` shows the rest later)."""
    console.print(leaderboard_table(rows, primary=primary))
    benchmarks = benchmark_table(rows)
    if benchmarks:
        console.print(benchmarks)
    for row in rows:
        console.print(f"[bold]{row['name']}[/] → {row['decision']}: " + "; ".join(row["reasons"]))


def print_data_summary(summary: dict) -> None:
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


def find_run(run_id: str | None):
    """The given run, or the latest successful run of the flow in this namespace."""
    from metaflow import Flow, Run

    if run_id:
        return Run(run_id if "/" in run_id else f"{FLOW_NAME}/{run_id}")
    run = Flow(FLOW_NAME).latest_successful_run
    if run is None:
        raise LookupError(f"no successful {FLOW_NAME} run found; run `python flows/finetune_flow.py run` first")
    return run


def leaderboard_of(run) -> list[dict]:
    """The run's leaderboard rows; a run that never reached `join` (failed, still running) says so in one line."""
    rows = getattr(run.data, "leaderboard", None)  # run.data is None until the run's end step has run
    if rows is None:
        raise LookupError(
            f"{run.pathspec} has no leaderboard (it failed or is still running); "
            f"leave out --run for the latest successful run"
        )
    return [upgraded(row) for row in rows]


def cmd_leaderboard(args) -> int:
    from barbarossa.decide import history

    if args.compare:
        return cmd_compare(args)
    run = find_run(args.run)
    rows = leaderboard_of(run)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    table = leaderboard_table(
        rows,
        f"Barbarossa leaderboard — {run.pathspec} ({run.finished_at:%Y-%m-%d %H:%M})",
        history.primary_of(run, DEFAULT_POLICY["primary"]),
        args.wide,
    )
    benchmarks = benchmark_table(rows, args.wide)
    for shown in filter(None, (table, benchmarks)):
        print_wide(shown) if args.wide else console.print(shown)
    return 0


# --------------------------------------------------------------------------- two runs side by side


def compare(a: dict, b: dict) -> dict:
    """Two runs' rows side by side (see history.run_record): per model, each run's value of the primary
    metric(s) and a few others, and B − A; whether both were measured on the same held-out data."""
    metrics = list(dict.fromkeys([a["primary"], b["primary"], *COMPARE_EXTRAS]))
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
            label = ("* " if metric in primaries else "") + short(metric)
            table.add_row(
                row["name"] if number == 0 else "", label, *values, format_cell(row["delta"][metric], signed=True)
            )
        decisions = [side["decision"] if side else "absent" for side in (row["a"], row["b"])]
        table.add_row("", "decision", *decisions, "" if decisions[0] == decisions[1] else "changed", end_section=True)
    console.print(table)
    console.print("* the ranking metric; Δ = B − A", style="dim", markup=False)


def cmd_compare(args) -> int:
    from barbarossa.decide import history

    if len(args.compare) > 2:
        raise ValueError(f"--compare takes one or two runs (RUN_A [RUN_B]), got {len(args.compare)}")
    runs = [find_run(r) for r in args.compare] + ([] if len(args.compare) == 2 else [find_run(None)])
    for run in runs:
        leaderboard_of(run)  # a run that never finished stops here, in one line
    result = compare(*(history.run_record(run, DEFAULT_POLICY["primary"]) for run in runs))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        if result["warning"]:
            errors.print(f"warning: {result['warning']}", style="bold red", markup=False)
    else:
        print_compare(result)
    return 0


# --------------------------------------------------------------------------- chat


def prompt_record(line: str) -> dict | None:
    """A typed or piped line as a prompt: 'instruction' or 'instruction<TAB>input' (None for a blank line)."""
    instruction, _, given = unicodedata.normalize("NFC", line.rstrip("\r\n")).partition("\t")
    if not instruction.strip():
        return None
    return {"instruction": instruction.strip(), "input": given.strip()}


def _typed_lines():
    """Lines typed at a terminal until an empty line or Ctrl-D."""
    while True:
        try:
            line = input("› ")
        except EOFError:
            return
        if not line.strip():
            return
        yield line


def cmd_chat(args) -> int:
    """Answer prompts with one model of a run, loaded and decoded as its evaluation did (greedy, same template)."""
    from barbarossa.data import prompts
    from barbarossa.decide import history
    from barbarossa.evaluate import protocol

    run = find_run(args.run)
    rows = {r["name"]: r for r in leaderboard_of(run)}
    row = rows.get(args.model)
    if row is None:
        raise LookupError(f"{run.pathspec} has no model {args.model!r}; it has {', '.join(rows)}")
    if row["status"] != "ok":
        raise LookupError(f"{args.model} failed in {run.pathspec}: {row['error']}")
    adapter = row.get("adapter_uri") if row["kind"] == "candidate" else None
    if row["kind"] == "candidate" and not (adapter and storage.exists(storage.join(adapter, "adapter_config.json"))):
        raise LookupError(f"{args.model}: its adapter is gone from {adapter} (was the run's output root deleted?)")
    item = history.run_item(run, args.model)
    settings = history.settings_of(run, item)
    template = prompts.template_of((run.data.data or {}).get("language"))  # the run's language (before packs: az)
    new_tokens = args.max_new_tokens or settings.eval.max_new_tokens
    with contextlib.redirect_stdout(sys.stderr):  # loading logs to stderr: stdout carries only the answers
        tokenizer, model, decision = protocol.load_for_evaluation(item, adapter, settings.train)
    model.eval()
    errors.print(
        f"{args.model} ({run.pathspec}): {item['base']['source']}"
        + (f" + adapter {adapter}" if adapter else ", untuned")
        + f"; {decision.compute} on {decision.device}, "
        f"greedy, at most {new_tokens} new tokens",
        markup=False,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        errors.print(
            "type an instruction (instruction<TAB>input to give an input); an empty line or Ctrl-D ends", markup=False
        )
    records = (prompt_record(line) for line in (_typed_lines() if interactive else sys.stdin))
    for number, record in enumerate(r for r in records if r):
        with contextlib.redirect_stdout(sys.stderr):
            [answer] = protocol.generate(model, tokenizer, [record], new_tokens, 1, decision, template)
        print(("\n" if number and not interactive else "") + (answer or "(empty answer)"), flush=True)
    return 0


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


def model_rows(spec: str | None = None) -> list[dict]:
    """One plain row per candidate: what `barbarossa models` prints."""
    from dataclasses import asdict

    from barbarossa.models import roster

    chosen = roster.select(spec) if spec else [c for r in roster.all_rosters().values() for c in r.candidates]
    rows = []
    for c in chosen:
        base = c.base
        rows.append(
            {
                "name": c.name,
                "roster": c.roster,
                "base": base.name,
                "base_id": base.source.removeprefix("hf:"),
                "revision": base.revision,
                "certainty": base.certainty,
                "certainty_note": base.certainty_note,
                "family": base.family,
                "task": base.task,
                "params": base.params,
                "licence": base.licence,
                "prompt_format": base.prompt_format,
                "remote_code": base.remote_code,
                "max_length": base.max_length,
                "gpu_memory_gb": base.resources.gpu_memory_gb,
                "resources": asdict(base.resources),
                "lora": asdict(c.lora),
                "published_as": c.published_as,
                "tags": list(c.tags),
                "refused": roster.refusal(base),
            }
        )
    return rows


def printed_as_json(args, rows: list[dict]) -> bool:
    """With --json, the rows as JSON on stdout (True: nothing else to print)."""
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    return args.json


def cmd_models(args) -> int:
    from barbarossa.models.roster import format_params

    rows = model_rows(args.models)
    if printed_as_json(args, rows):
        return 0
    table = Table(title=f"Barbarossa models ({len(rows)})")
    for _, header in MODEL_COLUMNS:
        table.add_column(header, justify="right" if header in ("params", "GPU GB") else "left")
    styles = {"confirmed": "green", "inferred": "yellow", "unverified": "dim"}
    for row in rows:
        cells = {**row, "params": format_params(row["params"])}
        table.add_row(*[str(cells[key]) for key, _ in MODEL_COLUMNS], style=styles.get(row["certainty"], ""))
    console.print(table)
    return 0


def language_rows(code: str | None = None) -> list[dict]:
    """One row per language pack (or the one `code` names): what a run with `--language` would use."""
    from barbarossa import languages
    from barbarossa.data import prompts

    rows = []
    for name in [code] if code else languages.known():
        pack = languages.load(name)
        identify = pack["identify"]
        rows.append(
            {
                "code": pack["code"],
                "name": pack["name"],
                "script": pack["script"],
                "fidelity": f"{identify['target']} vs {', '.join(identify['neighbours'])} ({identify['method']})",
                "sample_rows": sum(
                    1
                    for line in languages.resolve(pack["sample"]).read_text(encoding="utf-8").splitlines()
                    if line.strip()
                ),
                "benchmarks": [b["name"] for b in pack["benchmarks"]],
                "codes": pack["codes"],
                "prompt": prompts.template_of(pack).render(pack["example"]),
            }
        )
    return rows


def cmd_languages(args) -> int:
    """The language packs; with --language one of them, its prompt rendered."""
    rows = language_rows(args.language)
    if printed_as_json(args, rows):
        return 0
    columns = ("code", "name", "script", "fidelity", "sample_rows", "benchmarks")
    table = Table(*(c.replace("_", " ") for c in columns), title=f"Barbarossa languages ({len(rows)})")
    for row in rows:
        table.add_row(*(", ".join(row[c]) if isinstance(row[c], list) else str(row[c]) for c in columns))
    console.print(table)
    if args.language:
        console.print(rows[0]["prompt"], markup=False)
    return 0


def cmd_plan(args) -> int:
    from barbarossa import config
    from barbarossa.models import plan, roster, schedule

    profile = config.load_profile(args.profile)
    count, gpu = schedule.parse_gpus(args.gpus, plan.GPUS) if args.gpus else (1, args.gpu)
    calibrated = schedule.calibration()
    result = plan.build(roster.select(args.models), profile, gpu, calibrated)
    ceiling = calibrated.ceiling if calibrated else plan.MFU
    result["inventory"] = schedule.wall_clock(result["rows"], count, plan.GPUS[gpu][1], ceiling)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print_plan(result, profile.name)
    return 0


def cmd_fetch(args) -> int:
    """Mirror each distinct hub base once, and each benchmark file; one line per copy, one per failure at the end."""
    from dataclasses import asdict

    from barbarossa.models import roster, weights

    if not args.models and not args.benchmark:
        raise ValueError("fetch needs --models SPEC and/or --benchmark hf:<owner>/<dataset>@<revision>:<file>")
    failed = fetch_benchmarks(args.benchmark or [], args.to)
    bases = {(c.base.source, c.base.revision): c.base for c in roster.select(args.models)} if args.models else {}
    for base in bases.values():
        if not base.source.startswith("hf:"):
            console.print(f"{base.name}: skipped, {base.source} is built locally, not fetched")
            continue
        try:
            where = weights.fetch_base(asdict(base), args.to)
        except (weights.WeightsUnavailable, OSError) as err:
            failed.append(f"{base.name}: {err}")
            continue
        manifest = weights.read_manifest(where)
        size = sum(f["size"] for f in manifest["files"])
        shown = f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
        console.print(
            f"{base.name}: {shown}, {len(manifest['files'])} files, commit {manifest['commit'][:12]} → {where}",
            markup=False,
        )
    if bases and len(failed) < sum(b.source.startswith("hf:") for b in bases.values()):
        console.print(f"tasks read this mirror with {weights.ENV}={args.to}", markup=False)
    for line in failed:
        console.print(f"failed: {line}", style="red", markup=False)
    return 1 if failed else 0


def fetch_benchmarks(specs: list[str], to: str) -> list[str]:
    """Mirror each benchmark file at its pinned revision; one line each; the failures' lines back."""
    from barbarossa.data import benchmarks

    failed = []
    for spec in specs:
        try:
            where = benchmarks.fetch(spec, to)
        except Exception as err:
            failed.append(f"{spec}: {_error_line(err)}")
            continue
        manifest = json.loads(storage.read_bytes(where + benchmarks.MANIFEST_SUFFIX))
        console.print(
            f"{spec}: {manifest['size'] / 1e6:.1f} MB, commit {manifest['commit'][:12]} → {where} "
            "(name it as a benchmark source in the profile)",
            markup=False,
        )
    return failed


def print_plan(result: dict, profile_name: str = "") -> None:
    from barbarossa.models.plan import describe

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
        box = result["inventory"]
        wall = box["wall_hours"]
        console.print(
            f"on {box['gpus']}× {result['gpu']}: [bold]{wall:.1f} h wall-clock[/] ({wall / 24:.1f} days), "
            f"GPUs busy {box['busy_gpu_hours']:.1f} GPU-hours for {box['work_gpu_hours']:.1f} GPU-hours of "
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


def default_username(user: str | None = None) -> str:
    """The Makefile's rule: your login name, or "barbarossa" for root (Metaflow refuses root)."""
    if user is None:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    return "barbarossa" if user == "root" else user


def _error_line(err: Exception) -> str:
    """One line for a known failure; a run that is not found also says where and as whom it was looked for."""
    text = " ".join(str(err).split())
    if type(err).__name__ in ("MetaflowNotFound", "MetaflowNamespaceMismatch"):
        from metaflow import get_namespace

        text += (
            f" in namespace {get_namespace()} (Metaflow reads runs from .metaflow/ here or in a parent folder; "
            f"another user's runs need USERNAME=<them>, a deployment's --namespace production:<token> or any)"
        )
    return text


def _known_failure(err: Exception) -> bool:
    """Metaflow's own errors (no such run, flow or artifact) and our lookups: a message, not a traceback."""
    metaflow = any(kind.__module__.startswith("metaflow") for kind in type(err).__mro__)
    return metaflow or isinstance(err, (LookupError, ValueError))


errors = Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("USERNAME"):
        os.environ["USERNAME"] = default_username()
    parser = argparse.ArgumentParser(prog="barbarossa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    board = sub.add_parser("leaderboard", help="show the leaderboard of the latest (or a given) run, or compare two")
    board.add_argument("--run", help="run id (or FinetuneFlow/<id>); default: latest successful run")
    board.add_argument("--wide", action="store_true", help="every column (default: the few that fit 80 columns)")
    board.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="RUN_A [RUN_B]: both runs' metrics per model and B − A (RUN_B: latest successful run)",
    )
    board.add_argument("--json", action="store_true", help="print the rows (or the comparison) as JSON")
    board.add_argument(
        "--namespace", help="Metaflow namespace to read runs from (production:<token>, user:<name>, any)"
    )
    board.set_defaults(func=cmd_leaderboard)
    chatting = sub.add_parser("chat", help="answer prompts (typed, or one a line on stdin) with a model of a run")
    chatting.add_argument("--run", help="run id (or FinetuneFlow/<id>); default: latest successful run")
    chatting.add_argument("--model", required=True, help="a leaderboard row's name: a candidate or an untuned base")
    chatting.add_argument("--max-new-tokens", type=int, help="default: the run's [eval] max_new_tokens")
    chatting.add_argument(
        "--namespace", help="Metaflow namespace to read runs from (production:<token>, user:<name>, any)"
    )
    chatting.set_defaults(func=cmd_chat)
    listing = sub.add_parser("models", help="list the rosters' candidates (all, or those --models selects)")
    listing.add_argument("--models", help="roster, candidate names or filters, as the flow's --models")
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.set_defaults(func=cmd_models)
    speaking = sub.add_parser("languages", help="list the language packs (configs/languages), as --language picks them")
    speaking.add_argument("--language", help="one pack's code: also shows its prompt template rendered")
    speaking.add_argument("--json", action="store_true", help="print the rows as JSON")
    speaking.set_defaults(func=cmd_languages)
    planning = sub.add_parser("plan", help="tokens, GPU-hours and GPU memory per candidate, before spending any")
    planning.add_argument("--models", default="local", help="roster, candidate names or filters")
    planning.add_argument("--profile", default="gpu", help="training profile (configs/profiles)")
    planning.add_argument("--gpu", default="A100-80GB", help="GPU to estimate for")
    planning.add_argument("--gpus", help="the GPUs you have, <count>x<GPU> (e.g. 4xA100-80GB): adds wall-clock time")
    planning.add_argument("--json", action="store_true", help="print the plan as JSON")
    planning.set_defaults(func=cmd_plan)
    fetching = sub.add_parser(
        "fetch", help="mirror the selected hub bases' weights (tasks read it: BARBAROSSA_WEIGHTS=ROOT)"
    )
    fetching.add_argument("--models", help="roster, candidate names or filters")
    fetching.add_argument(
        "--benchmark",
        action="append",
        help="a benchmark file to mirror, hf:<owner>/<dataset>@<revision>:<file> (repeatable)",
    )
    fetching.add_argument("--to", required=True, help="mirror root: a folder or an s3:// prefix")
    fetching.set_defaults(func=cmd_fetch)
    args = parser.parse_args(argv)
    if getattr(args, "namespace", None):
        from metaflow import namespace

        namespace(None if args.namespace == "any" else args.namespace)
    try:
        return args.func(args)
    except BrokenPipeError:  # `barbarossa leaderboard --json | head`: the reader has gone, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if not _known_failure(err):
            raise
        errors.print(f"barbarossa {args.command}: {_error_line(err)}", style="red", markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
