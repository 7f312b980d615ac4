"""Benchmark scoring: multiple choice by log-likelihood (raw and per byte), translation by chrF++, per-item rows."""

import json

import pytest

from barbarossa import languages
from barbarossa.config import Eval
from barbarossa.data import benchmark_sets
from barbarossa.engine import loading
from barbarossa.evaluate import benchmark_scoring, stats


def items(answers: list[int], choices=("Bakı", "Gəncə", "Sumqayıt", "Şəki")) -> list[dict]:
    return [
        {"question": f"Sual {i}?", "context": "Mətn.", "choices": list(choices), "answer": a}
        for i, a in enumerate(answers)
    ]


def favours(index: int, bad: float = 5.0, good: float = 1.0):
    """A scorer whose model always prefers choice `index` (lowest NLL), every choice scored whole."""

    def scorer(records):
        per_item = len(items([0])[0]["choices"])
        nll = [good if i % per_item == index else bad for i in range(len(records))]
        return {"nll": nll, "tokens": [3] * len(records), "bytes": [len(r["output"].encode()) for r in records]}

    return scorer


def test_a_model_that_always_picks_answer_1_scores_the_share_of_items_whose_answer_is_1():
    answers = [0, 1, 0, 2, 3, 0, 1, 0, 2, 0]  # answer 1 (index 0) on 5 of 10 items
    scores, rows = benchmark_scoring.score_choice(items(answers), favours(0))
    assert scores["accuracy"] == 0.5 and rows["correct"] == [int(a == 0) for a in answers]
    scores, _ = benchmark_scoring.score_choice(items(answers), favours(3))
    assert scores["accuracy"] == pytest.approx(0.1)


def test_length_normalisation_changes_the_decision_where_a_long_choice_is_likelier_per_byte():
    # the short choice has the least total NLL (3 nats over 4 bytes), the long one the least per byte (4 over 40)
    assert benchmark_scoring.choose([3.0, 4.0], [4, 40]) == (0, 1)
    assert benchmark_scoring.choose([3.0, 40.0], [4, 40]) == (0, 0)  # per byte equal: the first wins both

    item = {"question": "Q?", "context": "", "choices": ["Bəli", "Bəli, çünki su 100 dərəcədə qaynayır."], "answer": 1}

    def scorer(records):
        return {"nll": [3.0, 4.0], "tokens": [2, 10], "bytes": [len(r["output"].encode()) for r in records]}

    scores, rows = benchmark_scoring.score_choice([item], scorer)
    assert rows == {"correct": [0], "correct_norm": [1]} and scores["accuracy_norm"] == 1.0


def test_an_item_whose_choice_was_not_scored_whole_counts_as_wrong():
    def scorer(records):  # the second item's third choice was cut at max_length (bytes 0)
        rows = favours(0)(records)
        rows["bytes"][4 + 2] = 0
        return rows

    scores, rows = benchmark_scoring.score_choice(items([0, 0]), scorer)
    assert rows["correct"] == [1, 0] and scores["unfit"] == 1 and scores["accuracy"] == 0.5


def test_translation_scores_both_directions_with_per_sentence_chrf_rows():
    pack = languages.load("az")
    pairs = [
        {"source": "The weather is sunny today.", "target": "Bu gün hava günəşlidir."},
        {"source": "I like reading books.", "target": "Mən kitab oxumağı sevirəm."},
    ]
    asked = []

    def translate(records):
        asked.extend(records)
        return [r["output"] if r["instruction"] == pack["translate_into"] else "" for r in records]

    scores, rows = benchmark_scoring.score_translation(pairs, pack, translate)
    assert scores["chrf_into"] == pytest.approx(100.0) and scores["chrf_out"] == 0.0
    assert [r["input"] for r in asked] == [p["source"] for p in pairs] + [p["target"] for p in pairs]
    assert len(rows["chrf_into"]) == len(rows["chrf_out"]) == 2
    found = stats.point(rows)
    assert found["chrf_into"] == pytest.approx(100.0) and found["chrf_out"] == 0.0


def test_benchmark_rows_get_intervals_and_paired_tests():
    mine = {"correct": [1, 1, 1, 0] * 10, "correct_norm": [1, 1, 0, 0] * 10}
    base = {"correct": [0, 0, 1, 0] * 10, "correct_norm": [1, 1, 0, 0] * 10}
    bounds = stats.intervals(mine, samples=400)
    assert bounds["accuracy"][0] < 0.75 < bounds["accuracy"][1]
    paired = stats.paired(mine, base, samples=400)
    assert paired["accuracy"]["ci"][0] > 0 and paired["accuracy"]["p"] < 0.01
    assert paired["accuracy_norm"]["ci"] == [0.0, 0.0] and paired["accuracy_norm"]["p"] == 1.0


def test_score_all_runs_a_real_model_through_both_kinds(tmp_path, tiny_llama):
    """A tiny llama scores the az pack's Belebele and FLORES samples: every item gets a row."""
    tokenizer, model = loading.load_tokenizer(tiny_llama), loading.load_model(tiny_llama, "llama").eval()
    pack = languages.load("az")
    sets = benchmark_sets.load_all(benchmark_sets.entries_for(pack, []), pack, max_items=3)
    written = benchmark_sets.write_all(sets, str(tmp_path))
    scores, rows = benchmark_scoring.score_all(model, tokenizer, written, pack, Eval(batch_size=4), {"max_length": 512})
    assert set(scores) == {"belebele", "flores"}
    assert len(rows["belebele"]["correct"]) == 3 and 0 <= scores["belebele"]["accuracy"] <= 1
    assert scores["belebele"]["unfit"] == 0  # a passage and its choices fit 512 tokens
    assert len(rows["flores"]["chrf_into"]) == 3 and scores["flores"]["chrf_into"] >= 0
    json.dumps(rows)  # per-item rows travel as plain data
