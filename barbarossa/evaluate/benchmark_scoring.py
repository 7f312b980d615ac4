"""Public benchmarks, scored on the model a task just evaluated, on its device, under the run's template.

Multiple choice by log-likelihood: each choice is scored as the answer to the
item's question (the passage as the template's input) by the same scorer as
the held-out rows (`scoring.response_nll`: −log P(choice, then EOS)); the
item's pick is the choice of least NLL (`accuracy`) and of least NLL per UTF-8
byte of the choice (`accuracy_norm`, which does not favour short choices for
being short); the item's prompt runs once for all its choices (engine/shared_prefix.py,
where the family allows). An item whose prompt leaves no room for a choice counts as
wrong (`unfit` says how many), so every model is scored on every item.

Translation: English → the language (`chrf_into`) and back (`chrf_out`),
the pack's instruction with the sentence as input, greedy decoding as the
held-out protocol's, chrF++ against the reference.

Per-item numbers (`correct`, `correct_norm`; chrF++ segment statistics) travel
like the held-out rows' so the leaderboard puts a bootstrap interval on every
benchmark metric and a paired test against the base (stats.py).

Why not lm-evaluation-harness: see docs/design.md — in short, its
scoring would not see the model through this run's template and runtime
decision, and its per-sample logs would have to be re-shaped into these rows.
"""

from __future__ import annotations

import time

from barbarossa.config import Eval
from barbarossa.data import benchmark_sets, prompts
from barbarossa.engine.scoring import response_nll
from barbarossa.evaluate.decoding import device_batch_size, generate, load_metric
from barbarossa.models.families import get_family

MAX_LENGTH = 2048  # tokens of prompt + choice: a Belebele passage and question fit well within it
UNKNOWN_MODEL_LENGTH = 512
MAX_NEW_TOKENS = 256


def choose(nlls: list[float], sizes: list[int]) -> tuple[int, int]:
    """(index of the least NLL, index of the least NLL per byte) among one item's choices; ties: the first."""
    raw = min(range(len(nlls)), key=lambda i: nlls[i])
    per_byte = min(range(len(nlls)), key=lambda i: nlls[i] / max(sizes[i], 1))
    return raw, per_byte


def score_choice(items: list[dict], scorer) -> tuple[dict, dict]:
    """(scores, per-item rows) of a multiple-choice set; `scorer(records)` returns response_nll's rows for them
    (`nll`, and `bytes` > 0 where the whole choice was scored)."""
    records = [
        {"instruction": item["question"], "input": item["context"], "output": choice}
        for item in items
        for choice in item["choices"]
    ]
    rows = scorer(records)
    correct, correct_norm, unfit, at = [], [], 0, 0
    for item in items:
        count = len(item["choices"])
        nlls, scored_whole = rows["nll"][at : at + count], rows["bytes"][at : at + count]
        sizes = [len(c.encode("utf-8")) for c in item["choices"]]
        at += count
        if not all(scored_whole):  # a choice cut short (or not scored at all) would be compared on a part of it
            unfit += 1
            correct.append(0)
            correct_norm.append(0)
            continue
        raw, per_byte = choose(nlls, sizes)
        correct.append(int(raw == item["answer"]))
        correct_norm.append(int(per_byte == item["answer"]))
    scores = {
        "accuracy": round(sum(correct) / len(items), 4),
        "accuracy_norm": round(sum(correct_norm) / len(items), 4),
        "items": len(items),
        "unfit": unfit,
    }
    return scores, {"correct": correct, "correct_norm": correct_norm}


def score_translation(items: list[dict], language: dict, translate) -> tuple[dict, dict]:
    """(scores, per-item rows) of English → language (`into`) and back (`out`); `translate(records)` answers them."""
    chrf = load_metric("chrf")
    scores, rows = {"items": len(items)}, {}
    for direction, instruction, given, wanted in (
        ("into", language["translate_into"], "source", "target"),
        ("out", language["translate_out"], "target", "source"),
    ):
        records = [{"instruction": instruction, "input": item[given], "output": item[wanted]} for item in items]
        answers = translate(records)
        found = chrf.compute(predictions=answers, references=[r["output"] for r in records])
        scores[f"chrf_{direction}"] = round(found["score"], 3)
        rows[f"chrf_{direction}"] = [list(map(int, s)) for s in found["segments"]]
    return scores, rows


def score_all(
    model, tokenizer, written_sets: list[dict], language: dict, eval_cfg: Eval, base: dict, decision=None
) -> tuple[dict, dict]:
    """({name: scores}, {name: per-item rows}) of every benchmark set of the run (data/benchmark_sets.py references)."""
    template = prompts.template_of(language)
    max_length = min(MAX_LENGTH, base.get("max_length") or UNKNOWN_MODEL_LENGTH)
    share = get_family(base["family"]).shares_prefix if base.get("family") else False
    scores, per_row = {}, {}
    for found in written_sets:
        started = time.time()
        items = benchmark_sets.read_items(found["uri"])
        if found["kind"] == "choice":

            def scorer(records):
                batch = device_batch_size(model, eval_cfg.batch_size, max_length, len(records))
                return response_nll(
                    model, tokenizer, records, max_length, batch, decision, template, share_prompts=share
                )  # an item's prompt runs once for all its choices

            scores[found["name"]], per_row[found["name"]] = score_choice(items, scorer)
        else:

            def translate(records):
                longest = max(len(prompts.encode_response(tokenizer, r["output"])) for r in records)
                new_tokens = min(MAX_NEW_TOKENS, 8 + longest * 3 // 2)
                batch = device_batch_size(model, eval_cfg.batch_size, max_length + new_tokens, len(records))
                return generate(model, tokenizer, records, new_tokens, batch, decision, template)

            scores[found["name"]], per_row[found["name"]] = score_translation(items, language, translate)
        scores[found["name"]].update(
            kind=found["kind"], source=found["source"], seconds=round(time.time() - started, 1)
        )
    return scores, per_row
