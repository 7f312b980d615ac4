"""`barbarossa` command line: read leaderboards of past runs, list rosters.

    barbarossa leaderboard [--run ID] [--json]
    barbarossa models [--models SPEC] [--json]
    barbarossa plan [--models SPEC] [--profile gpu] [--gpu A100-80GB] [--json]
    barbarossa fetch --models SPEC --to ROOT
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.table import Table

from barbarossa.console import console
from barbarossa.leaderboard import row_cell

FLOW_NAME = "FinetuneFlow"
TABLE_COLUMNS = [
    ("rank", "#"), ("name", "model"), ("kind", "kind"), ("status", "status"), ("eval_loss", "held-out loss"),
    ("delta_eval_loss", "Δ loss"), ("chrf", "chrF++"), ("delta_chrf", "Δ chrF++"), ("az_fidelity", "az"),
    ("degenerate_rate", "loops"), ("decision", "decision"),
]
DECISION_STYLE = {"release": "bold green", "hold": "yellow", "failed": "bold red", "baseline": "dim"}


def leaderboard_table(rows: list[dict], title: str = "Barbarossa leaderboard") -> Table:
    table = Table(title=title, show_lines=False)
    for _, header in TABLE_COLUMNS:
        table.add_column(header, justify="right" if header in ("#", "held-out loss", "chrF++") else "left")
    for row in rows:
        style = DECISION_STYLE.get(row["decision"], "")
        table.add_row(*[row_cell(row, key) for key, _ in TABLE_COLUMNS], style=style)
    return table


def print_leaderboard(rows: list[dict]) -> None:
    console.print(leaderboard_table(rows))
    for row in rows:
        console.print(f"[bold]{row['name']}[/] → {row['decision']}: " + "; ".join(row["reasons"]))


def print_data_summary(summary: dict) -> None:
    console.print(
        f"data: {summary['train_rows']} train rows ({summary['train_fingerprint']}), {summary['eval_rows']} eval rows "
        f"({summary['eval_fingerprint']}, {summary['eval_source']}); removed {summary['duplicates_removed']} duplicates, "
        f"{summary['eval_overlap_removed']} rows overlapping the eval set, skipped {summary['bad_rows_skipped']} bad rows"
    )
    for bad in summary["bad_rows"][:10]:
        console.print(f"  skipped {bad['message']}")


def find_run(run_id: str | None):
    """The given run, or the latest successful run of the flow in this namespace."""
    from metaflow import Flow, Run

    if run_id:
        return Run(run_id if "/" in run_id else f"{FLOW_NAME}/{run_id}")
    run = Flow(FLOW_NAME).latest_successful_run
    if run is None:
        raise LookupError(f"no successful {FLOW_NAME} run found; run `python flows/finetune_flow.py run` first")
    return run


def cmd_leaderboard(args) -> int:
    run = find_run(args.run)
    rows = run.data.leaderboard
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        console.print(leaderboard_table(rows, title=f"Barbarossa leaderboard — {run.pathspec} ({run.finished_at})"))
    return 0


MODEL_COLUMNS = [("name", "name"), ("roster", "roster"), ("base_id", "base id"), ("certainty", "certainty"),
                 ("family", "family"), ("params", "params"), ("gpu_memory_gb", "GPU GB"), ("licence", "licence")]


def model_rows(spec: str | None = None) -> list[dict]:
    """One plain row per candidate: what `barbarossa models` prints."""
    from dataclasses import asdict

    from barbarossa import registry

    chosen = registry.select(spec) if spec else [c for r in registry.all_rosters().values() for c in r.candidates]
    rows = []
    for c in chosen:
        base = c.base
        rows.append({
            "name": c.name, "roster": c.roster, "base": base.name, "base_id": base.source.removeprefix("hf:"),
            "revision": base.revision, "certainty": base.certainty, "certainty_note": base.certainty_note,
            "family": base.family, "task": base.task, "params": base.params, "licence": base.licence,
            "prompt_format": base.prompt_format, "remote_code": base.remote_code, "max_length": base.max_length,
            "gpu_memory_gb": base.resources.gpu_memory_gb, "resources": asdict(base.resources),
            "lora": asdict(c.lora), "published_as": c.published_as, "tags": list(c.tags),
            "refused": registry.refusal(base),
        })
    return rows


def cmd_models(args) -> int:
    from barbarossa.registry import format_params

    rows = model_rows(args.models)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
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


def cmd_plan(args) -> int:
    from barbarossa import config, plan, registry

    profile = config.load_profile(args.profile)
    result = plan.build(registry.select(args.models), profile["train"], args.gpu)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print_plan(result, profile["name"])
    return 0


def cmd_fetch(args) -> int:
    """Mirror each distinct hub base once; one line per base, and one per failure at the end."""
    from dataclasses import asdict

    from barbarossa import registry, weights

    bases = {(c.base.source, c.base.revision): c.base for c in registry.select(args.models)}
    failed = []
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
        console.print(f"{base.name}: {shown}, {len(manifest['files'])} files, commit {manifest['commit'][:12]} → {where}",
                      markup=False)
    if len(failed) < sum(b.source.startswith("hf:") for b in bases.values()):
        console.print(f"tasks read this mirror with {weights.ENV}={args.to}", markup=False)
    for line in failed:
        console.print(f"failed: {line}", style="red", markup=False)
    return 1 if failed else 0


def print_plan(result: dict, profile_name: str = "") -> None:
    from barbarossa.plan import describe

    table = Table(title=f"Plan on {result['gpu']}" + (f" (profile {profile_name})" if profile_name else ""))
    for header in ("name", "params", "tokens", "GPU-hours", "LoRA GB", "QLoRA GB", "planned GB", "declared GB",
                   "trainer will run"):
        table.add_column(header, justify="left" if header in ("name", "trainer will run") else "right")
    for row in result["rows"]:
        table.add_row(*describe(row), style="red" if row["fits"] == "no" else "")
    console.print(table)
    console.print(f"total: {result['total_tokens']:,} tokens, {result['total_gpu_hours']:.2f} GPU-hours")
    console.print("[dim]LoRA GB: 16-bit weights, no checkpointing; QLoRA GB: nf4 + checkpointing (the least memory); "
                  "planned GB: what the trainer will run on this GPU (the runtime decision every task makes)[/]")
    console.print(f"[dim]assumptions: {result['assumptions']}[/]")


def print_release(released: list[dict]) -> None:
    if not released:
        console.print("release: no candidate passed the release policy; nothing bundled")
    for bundle in released:
        where = bundle["published_to"] or (f"dry run; --publish would copy it to {bundle['would_publish_to']}"
                                           if bundle["would_publish_to"] else "no --release-to target")
        merged = f", merged weights verified (max |Δlogit| {bundle['merge_max_logit_diff']:.1e})" if bundle["merged"] else ""
        console.print(f"release: {bundle['name']}: {len(bundle['files'])} files, {bundle['bytes'] / 1e6:.1f} MB at "
                      f"{bundle['bundle_uri']}{merged}; {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="barbarossa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    board = sub.add_parser("leaderboard", help="show the leaderboard of the latest (or a given) run")
    board.add_argument("--run", help="run id (or FinetuneFlow/<id>); default: latest successful run")
    board.add_argument("--json", action="store_true", help="print the rows as JSON")
    board.set_defaults(func=cmd_leaderboard)
    listing = sub.add_parser("models", help="list the rosters' candidates (all, or those --models selects)")
    listing.add_argument("--models", help="roster, candidate names or filters, as the flow's --models")
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.set_defaults(func=cmd_models)
    planning = sub.add_parser("plan", help="tokens, GPU-hours and GPU memory per candidate, before spending any")
    planning.add_argument("--models", default="local", help="roster, candidate names or filters")
    planning.add_argument("--profile", default="gpu", help="training profile (configs/profiles)")
    planning.add_argument("--gpu", default="A100-80GB", help="GPU to estimate for")
    planning.add_argument("--json", action="store_true", help="print the plan as JSON")
    planning.set_defaults(func=cmd_plan)
    fetching = sub.add_parser("fetch", help="mirror the selected hub bases' weights (tasks read it: BARBAROSSA_WEIGHTS=ROOT)")
    fetching.add_argument("--models", required=True, help="roster, candidate names or filters")
    fetching.add_argument("--to", required=True, help="mirror root: a folder or an s3:// prefix")
    fetching.set_defaults(func=cmd_fetch)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (LookupError, ValueError) as err:
        console.print(f"[red]{err}[/]")
        return 1


if __name__ == "__main__":
    sys.exit(main())
