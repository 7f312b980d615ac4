"""The judge over one fine-tune run: which candidates it judges, against which answers, and the fields each row gets.

Every evaluated model's greedy answers are in a file beside its prompts and references (`answers_uri`, written
by the evaluation): a candidate is compared with its base's answers on the same held-out prompts, and with its
last release's where that release kept its answers for the same held-out set (same eval fingerprint).
"""

from __future__ import annotations

import functools
import time

from barbarossa import llm, metric_registry
from barbarossa.data import instructions
from barbarossa.judge.numbers import row_fields
from barbarossa.judge.pairs import Judgement, judge_pairs
from barbarossa.judge.settings import Judge, teacher


def chosen(results: list[dict], primary: str, top_k: int) -> list[dict]:
    """The evaluated candidates to judge: all of them, or the best `top_k` by the primary metric."""
    candidates = [
        r
        for r in results
        if r["item"]["kind"] == "candidate" and (r.get("metrics") or {}).get("answers_uri") and not r.get("error")
    ]
    if not top_k:
        return candidates
    scored = [r for r in candidates if r["metrics"].get(primary) is not None]
    best_first = sorted(scored, key=lambda r: r["metrics"][primary], reverse=metric_registry.higher_is_better(primary))
    return best_first[:top_k]


def _answers(uri: str | None) -> list[dict] | None:
    return instructions.read_jsonl(uri) if uri else None


def _compare(client, pack: dict, mine: list[dict], theirs: list[dict] | None, settings: Judge) -> Judgement | None:
    """The candidate's answers against another model's, on the prompts both answered, in the same order."""
    if not theirs or [r["instruction"] for r in theirs] != [r["instruction"] for r in mine]:
        return None
    rows = [{"instruction": r["instruction"], "input": r["input"], "output": r["reference"]} for r in mine]
    return judge_pairs(client, pack, rows, [r["generated"] for r in mine], [r["generated"] for r in theirs], settings)


def judge_run(
    results: list[dict],
    settings: Judge,
    pack: dict,
    primary: str,
    last_releases: dict | None = None,
    eval_fingerprint: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, dict]:
    """{candidate name: its `judge.*` row fields}; {} when judging is off. Verdicts are cached by content under
    `cache_dir`, so a rerun over the same answers asks the judge nothing."""
    if not settings.enabled:
        return {}
    bases = {r["item"]["name"]: r for r in results if r["item"]["kind"] == "baseline"}
    client = llm.connect(teacher(settings), cache_dir)  # a folder or an s3:// prefix, as given
    answers = functools.cache(_answers)  # a base's answers are read once for all its candidates
    judged = {}
    for result in chosen(results, primary, settings.top_k):
        started = time.perf_counter()
        name = result["item"]["name"]
        mine = answers(result["metrics"]["answers_uri"])
        base = bases.get(result["item"]["base"]["name"]) or {}
        vs_base = _compare(client, pack, mine, answers((base.get("metrics") or {}).get("answers_uri")), settings)
        last = (last_releases or {}).get(name) or {}
        same_data = eval_fingerprint and last.get("eval_fingerprint") == eval_fingerprint
        vs_release = _compare(client, pack, mine, answers(last.get("answers_uri")), settings) if same_data else None
        judged[name] = row_fields(settings, vs_base, vs_release) | {
            "judge.examples": _examples(vs_base),
            "judge.seconds": round(time.perf_counter() - started, 1),  # the judge's share of a run's time
        }
    return judged


def _examples(judgement: Judgement | None, count: int = 3) -> list[dict]:
    """A few judged pairs side by side, for the card: the prompt, both answers, the two verdicts, the outcome."""
    if judgement is None:
        return []
    return [
        {
            "instruction": pair.instruction,
            "candidate": pair.candidate,
            "base": pair.other,
            "verdicts": [pair.candidate_first.label, pair.candidate_second.label],
            "outcome": pair.outcome or "unparsed",
        }
        for pair in judgement.pairs[:count]
    ]
