"""`barbarossa` command line: read leaderboards of past runs, compare runs, chat with a model, list rosters.

    barbarossa leaderboard [--run ID] [--wide] [--json] [--namespace NS]
    barbarossa leaderboard --compare RUN_A [RUN_B] [--json]     (RUN_B: the latest successful run)
    barbarossa chat [--run ID] --model NAME [--max-new-tokens N] (prompts from stdin, one a line, or typed)
    barbarossa models [--models SPEC] [--json]
    barbarossa languages [--language CODE] [--json]
    barbarossa plan [--models SPEC] [--profile gpu] [--gpu A100-80GB | --gpus 4xA100-80GB] [--json]
    barbarossa fetch [--models SPEC] [--benchmark hf:OWNER/DATASET@REV:FILE ...] --to ROOT
    barbarossa serve [GGUF] [--port N] [--threads N] [--ctx N]    (llama.cpp's server: a local teacher)

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

from rich.console import Console

from barbarossa import reporting, storage
from barbarossa.config import Policy
from barbarossa.console import console
from barbarossa.decide.legacy import upgraded

FLOW_NAME = "FinetuneFlow"
# errors and notes that must not mix with what a command prints on stdout (JSON, answers)
stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
    table = reporting.leaderboard_table(
        rows,
        f"Barbarossa leaderboard — {run.pathspec} ({run.finished_at:%Y-%m-%d %H:%M})",
        history.primary_of(run, Policy().primary),
        args.wide,
    )
    benchmarks = reporting.benchmark_table(rows, args.wide)
    for shown in filter(None, (table, benchmarks)):
        reporting.print_wide(shown, console) if args.wide else console.print(shown)
    judged = reporting.judge_table(rows)
    if judged:  # about 100 columns with its intervals: printed uncut
        reporting.print_wide(judged, console)
    return 0


# --------------------------------------------------------------------------- two runs side by side


def cmd_compare(args) -> int:
    from barbarossa.decide import history

    if len(args.compare) > 2:
        raise ValueError(f"--compare takes one or two runs (RUN_A [RUN_B]), got {len(args.compare)}")
    runs = [find_run(r) for r in args.compare] + ([] if len(args.compare) == 2 else [find_run(None)])
    for run in runs:
        leaderboard_of(run)  # a run that never finished stops here, in one line
    result = reporting.compare(*(history.run_record(run, Policy().primary) for run in runs))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        if result["warning"]:
            stderr_console.print(f"warning: {result['warning']}", style="bold red", markup=False)
    else:
        reporting.print_compare(result)
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
    stderr_console.print(
        f"{args.model} ({run.pathspec}): {item['base']['source']}"
        + (f" + adapter {adapter}" if adapter else ", untuned")
        + f"; {decision.compute} on {decision.device}, "
        f"greedy, at most {new_tokens} new tokens",
        markup=False,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        stderr_console.print(
            "type an instruction (instruction<TAB>input to give an input); an empty line or Ctrl-D ends", markup=False
        )
    records = (prompt_record(line) for line in (_typed_lines() if interactive else sys.stdin))
    for number, record in enumerate(r for r in records if r):
        with contextlib.redirect_stdout(sys.stderr):
            [answer] = protocol.generate(model, tokenizer, [record], new_tokens, 1, decision, template)
        print(("\n" if number and not interactive else "") + (answer or "(empty answer)"), flush=True)
    return 0


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
    rows = model_rows(args.models)
    if not printed_as_json(args, rows):
        reporting.print_models(rows)
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
    if not printed_as_json(args, rows):
        reporting.print_languages(rows, with_prompt=bool(args.language))
    return 0


def cmd_plan(args) -> int:
    from barbarossa import config
    from barbarossa.models import roster
    from barbarossa.planning import calibration, plan

    profile = config.load_profile(args.profile)
    count, gpu = calibration.parse_gpus(args.gpus, plan.GPUS) if args.gpus else (1, args.gpu)
    calibrated = calibration.measured()
    result = plan.build(roster.select(args.models), profile, gpu, calibrated)
    ceiling = calibrated.ceiling if calibrated else plan.MFU
    result["inventory"] = calibration.wall_clock(result["rows"], count, plan.GPUS[gpu][1], ceiling)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    reporting.print_plan(result, profile.name)
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
    from barbarossa.data import benchmark_sets

    failed = []
    for spec in specs:
        try:
            where = benchmark_sets.fetch(spec, to)
        except Exception as err:
            failed.append(f"{spec}: {_error_line(err)}")
            continue
        manifest = json.loads(storage.read_bytes(where + benchmark_sets.MANIFEST_SUFFIX))
        console.print(
            f"{spec}: {manifest['size'] / 1e6:.1f} MB, commit {manifest['commit'][:12]} → {where} "
            "(name it as a benchmark source in the profile)",
            markup=False,
        )
    return failed


def cmd_serve(args) -> int:
    """llama.cpp's server over a GGUF file until Ctrl-C; prints the [teacher] keys that reach it."""
    from barbarossa import llm

    with llm.serve(args.gguf, port=args.port, threads=args.threads, ctx=args.ctx) as server:
        console.print(f'[teacher]\nendpoint = "{server.url}"\nmodel = "{server.model}"', markup=False)
        stderr_console.print(f"serving {server.gguf} until Ctrl-C", markup=False)
        with contextlib.suppress(KeyboardInterrupt):
            wait_for_ctrl_c()
    return 0


def wait_for_ctrl_c() -> None:
    import time

    while True:
        time.sleep(3600)


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


def argument_parser() -> argparse.ArgumentParser:
    """The `barbarossa` command and its subcommands; each subcommand's `func` runs it."""
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
    serving = sub.add_parser("serve", help="run llama.cpp's server over a GGUF file: a local teacher (docs/llm.md)")
    serving.add_argument("gguf", nargs="?", help="a GGUF path or wheel-gguf:<module>/<file> (default: SmolLM2-135M)")
    serving.add_argument("--port", type=int, default=8080, help="on 127.0.0.1; 0: a free one (default 8080)")
    serving.add_argument("--threads", type=int, default=1, help="decoding threads (default 1)")
    serving.add_argument("--ctx", type=int, default=2048, help="context in tokens (default 2048)")
    serving.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("USERNAME"):
        os.environ["USERNAME"] = default_username()
    args = argument_parser().parse_args(argv)
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
        stderr_console.print(f"barbarossa {args.command}: {_error_line(err)}", style="red", markup=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())
