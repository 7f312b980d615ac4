"""The self-instruct flow's work as functions: what `start` checks, what a generate task asks, the ordered
filter with its top-up waves, and what `end` writes — so the flow reads as a paragraph and tests need no Metaflow.

Requests are fixed by their index (`plan.plan_requests`) and answered through the endpoint layer's content
cache, so a resumed or repeated run asks the teacher nothing it already answered, and the one ordered pass over
the responses (request, then position) makes the same decisions every time: no duplicates, nothing lost.
"""

from __future__ import annotations

import dataclasses
import json
import time

from barbarossa import storage
from barbarossa.data import benchmark_sets, instructions
from barbarossa.data.instructions import DataError
from barbarossa.selfinstruct.filters import RULES, Pool
from barbarossa.selfinstruct.plan import Request, in_groups, plan_requests, wave_size
from barbarossa.selfinstruct.prompt import build_prompt, parse_response, stop_strings
from barbarossa.selfinstruct.settings import SelfInstruct

MIN_SEEDS = 5  # fewer and every request shows nearly the same seeds: the tasks come back alike


def load_seeds(source: str, pack: dict, settings: SelfInstruct) -> instructions.Dataset:
    """The seed tasks (instruction JSONL, validated like training data), at least a handful."""
    seeds = instructions.load(source, "fail", pack)
    wanted = max(MIN_SEEDS, settings.seeds_per_prompt)
    if len(seeds.records) < wanted:
        raise DataError(f"{seeds.source}: {len(seeds.records)} seed tasks; self-instruct needs at least {wanted}")
    return seeds


def held_out_rows(pack: dict, extra: str = "") -> dict[str, list[dict]]:
    """The prompts a generated task must not copy: the pack's benchmarks and `extra` files, as instruction rows
    (a question with its passage; each side of a translation pair)."""
    rows = {}
    for found in benchmark_sets.load_all(benchmark_sets.entries_for(pack, [], extra), pack):
        if found["kind"] == "translation":
            rows[found["name"]] = [
                {"instruction": item[side], "input": ""} for item in found["items"] for side in ("source", "target")
            ]
        else:
            rows[found["name"]] = [
                {"instruction": i["question"], "input": i.get("context", "")} for i in found["items"]
            ]
    return rows


def first_wave(seed_count: int, settings: SelfInstruct) -> list[list[Request]]:
    """The parallel wave `start` fans out: sized by the expected keep rate, in groups of requests_per_task."""
    requests = plan_requests(seed_count, settings, 0, wave_size(settings, 0, 0))
    return in_groups(requests, settings.requests_per_task)


def ask(client, pack: dict, seeds: list[dict], requests: list[Request], settings: SelfInstruct) -> list[dict]:
    """The teacher's answers to `requests`, in order, each with its request index and the tokens it cost."""
    prompts = [build_prompt(pack, [seeds[i] for i in r.seeds], settings.tasks_per_request) for r in requests]
    answers = client.complete_many(
        prompts,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        stop=stop_strings(settings.tasks_per_request),
        seed=settings.seed,  # a server that takes a sampling seed (llama.cpp, vLLM) answers a rerun the same way
    )
    return [
        {
            "request": request.index,
            "seeds": list(request.seeds),
            "text": answer.text,
            "finish_reason": answer.finish_reason,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "cached": answer.cached,
        }
        for request, answer in zip(requests, answers)
    ]


def sift(pool: Pool, responses: list[dict], settings: SelfInstruct) -> None:
    """Every block of every response, in request order, through the pool: kept or rejected by one rule."""
    first = settings.seeds_per_prompt + 1  # the seeds are tasks 1..k: the teacher writes from k+1
    for response in sorted(responses, key=lambda r: r["request"]):
        for candidate in parse_response(response["text"], first, response["finish_reason"], response["request"]):
            pool.consider(candidate)


def top_up(pool: Pool, responses: list[dict], ask_more, settings: SelfInstruct, seed_count: int) -> list[dict]:
    """More waves, one after another, until the target is kept or the request budget is spent; all responses.

    `ask_more(requests)` answers a wave (the same `ask`, in this step). Each wave is sized by the keep rate seen
    so far; requests continue the numbering, so a rerun asks the same ones.
    """
    responses = sorted(responses, key=lambda r: r["request"])
    while size := wave_size(settings, len(pool.kept), len(responses)):
        wave = ask_more(plan_requests(seed_count, settings, len(responses), size))
        sift(pool, wave, settings)
        responses += wave
    return responses


def usage(responses: list[dict]) -> dict:
    """Requests, cache hits and tokens of a run's responses."""
    return {
        "requests": len(responses),
        "cached": sum(r["cached"] for r in responses),
        "prompt_tokens": sum(r["prompt_tokens"] for r in responses),
        "completion_tokens": sum(r["completion_tokens"] for r in responses),
    }


def companion(out: str, suffix: str) -> str:
    """`gen.jsonl` → `gen.<suffix>`: the files written beside the output."""
    stem = out[: -len(".jsonl")] if out.endswith(".jsonl") else out
    return f"{stem}.{suffix}"


def write_outputs(out: str, pool: Pool, provenance: dict) -> dict:
    """The rejected rows, the provenance and the data card beside `out`, then `out` itself — last, so an output
    file that exists is a finished one (none when nothing was kept: a DataError names the rejected file).
    Returns where everything went and the kept rows' fingerprint."""
    written = {
        "out": out,
        "rows": len(pool.kept),
        "fingerprint": instructions.fingerprint(pool.kept) if pool.kept else "",
        "rejected": companion(out, "rejected.jsonl"),
        "rejected_rows": len(pool.rejected),
        "provenance": companion(out, "provenance.json"),
        "card": companion(out, "card.md"),
    }
    record = {**provenance, "output": written, "counts": pool.counts()}
    storage.write_text(written["rejected"], instructions.to_jsonl(pool.rejected))
    storage.write_text(written["provenance"], json.dumps(record, indent=2, ensure_ascii=False))
    storage.write_text(written["card"], data_card(record, pool))
    if not pool.kept:  # what was rejected, and why, is written: the reason to look at it
        counts = ", ".join(f"{rule} {n}" for rule, n in pool.counts().items() if n)
        raise DataError(f"no generated task was kept ({counts}); see {written['rejected']}; nothing written to {out}")
    storage.write_text(out, instructions.to_jsonl(pool.kept))
    return written


def provenance(teacher, settings: SelfInstruct, pack: dict, seeds: dict, responses: list[dict], run: str) -> dict:
    """Where the rows came from: the teacher (never its key), the knobs, the seeds ({source, rows, fingerprint}),
    the cost, the run."""
    return {
        "teacher": {"backend": teacher.backend, "endpoint": teacher.endpoint, "model": teacher.model},
        "settings": dataclasses.asdict(settings),
        "language": pack["code"],
        "seeds": seeds,
        "usage": usage(responses),
        "run": run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def data_card(record: dict, pool: Pool, examples: int = 3) -> str:
    """The generated data's card (Markdown): what asked whom, what was kept, what each rule dropped, examples."""
    counts, teacher, cost = record["counts"], record["teacher"], record["usage"]
    lines = [
        f"# Self-instruct data ({record['language']})",
        "",
        f"Generated by `{teacher['model']}` at `{teacher['endpoint']}` ({teacher['backend']}) from "
        f"{record['seeds']['rows']} seed tasks `{record['seeds']['source']}` (fingerprint "
        f"`{record['seeds']['fingerprint']}`), run `{record['run']}`: {cost['requests']} requests "
        f"({cost['cached']} from the cache), {cost['prompt_tokens']:,} prompt and {cost['completion_tokens']:,} "
        "completion tokens.",
        "",
        f"**{counts['kept']} tasks kept** (fingerprint `{record['output']['fingerprint']}`), "
        f"{sum(counts[rule] for rule in RULES)} rejected:",
        "",
        "| rule | tasks |",
        "|---|---|",
        *(f"| {rule} | {counts[rule]} |" for rule in RULES),
        "",
        "## Kept (first few)",
        "",
        *(f"- {row['instruction']} → {row['output'][:160]}" for row in pool.kept[:examples]),
        "",
        "## Rejected (one per rule)",
        "",
    ]
    for rule in RULES:
        row = next((r for r in pool.rejected if r["rule"] == rule), None)
        if row:
            lines.append(f"- `{rule}` ({row['detail']}): {(row['instruction'] or row['raw'])[:160]!r}")
    return "\n".join(lines) + "\n"


def card_components(written: dict, counts: dict, cost: dict, pool: Pool, examples: int = 5) -> list:
    """The sift step's Metaflow card: where the rows went, the count per rule, kept and rejected examples."""
    from metaflow.cards import Markdown, Table

    parts = [
        Markdown("# Self-instruct"),
        Markdown(
            f"{written['rows']} tasks kept → `{written['out']}`; {written['rejected_rows']} rejected → "
            f"`{written['rejected']}`; {cost['requests']} requests ({cost['cached']} from the cache)."
        ),
        Table([["kept", str(counts["kept"])], *([rule, str(counts[rule])] for rule in RULES)], headers=["", "tasks"]),
    ]
    if pool.kept:
        parts += [
            Markdown("## Kept"),
            Table(
                [[r["instruction"], r["input"], r["output"][:300]] for r in pool.kept[:examples]],
                headers=["instruction", "input", "output"],
            ),
        ]
    if pool.rejected:
        parts += [
            Markdown("## Rejected"),
            Table(
                [[r["rule"], r["detail"], (r["instruction"] or r["raw"])[:300]] for r in pool.rejected[:examples]],
                headers=["rule", "why", "task"],
            ),
        ]
    return parts
