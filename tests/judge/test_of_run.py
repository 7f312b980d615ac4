"""Which candidates a run's judge compares: every evaluated one, or the best top-k by the primary metric."""

import pytest
from conftest import moto_s3
from scripted_llm import Reply, chat_body

from barbarossa import judge, languages, storage
from barbarossa.data import instructions
from barbarossa.judge import of_run


def result(name: str, kind: str = "candidate", bits: float | None = 2.0, answers: bool = True, error: str = "") -> dict:
    metrics = {"bits_per_byte": bits, "chrf": 10.0, "answers_uri": "a.jsonl" if answers else None}
    return {"item": {"name": name, "kind": kind}, "metrics": metrics, "error": error}


RESULTS = [
    result("worse", bits=2.9),
    result("best", bits=2.1),
    result("middle", bits=2.5),
    result("base", kind="baseline", bits=3.2),
    result("no-answers", bits=1.0, answers=False),  # evaluated before answers were kept: nothing to judge
    result("failed", bits=1.5, error="out of memory"),
]


def test_every_evaluated_candidate_with_answers_is_judged_when_top_k_is_zero():
    assert [r["item"]["name"] for r in of_run.chosen(RESULTS, "bits_per_byte", 0)] == ["worse", "best", "middle"]


def test_top_k_takes_the_best_by_the_primary_metric_in_its_direction():
    assert [r["item"]["name"] for r in of_run.chosen(RESULTS, "bits_per_byte", 2)] == ["best", "middle"]  # lower
    by_chrf = [result("a", bits=2.0) | {"metrics": {"chrf": 5.0, "answers_uri": "x"}}]
    by_chrf += [result("b", bits=2.0) | {"metrics": {"chrf": 9.0, "answers_uri": "y"}}]
    assert [r["item"]["name"] for r in of_run.chosen(by_chrf, "chrf", 1)] == ["b"]  # higher is better


@pytest.mark.server
def test_a_run_on_s3_keeps_its_verdicts_on_s3_and_a_rerun_asks_nothing(scripted_llm, monkeypatch, tmp_path):
    scripted_llm.answer = lambda path, body: Reply(body=chat_body("[[A]]"))
    pairs = [("Paytaxt hansıdır?", "Bakı Azərbaycanın paytaxtıdır.", "Bakı."), ("Say salam.", "Salam!", "Hello!")]
    results = []
    for name, kind, column in (("tuned", "candidate", 1), ("base", "baseline", 2)):
        answers = [{"instruction": p[0], "input": "", "reference": p[1], "generated": p[column]} for p in pairs]
        uri = storage.write_text(str(tmp_path / f"{name}.jsonl"), instructions.to_jsonl(answers))
        item = {"name": name, "kind": kind, "base": {"name": "base"}}
        results.append({"item": item, "metrics": {"bits_per_byte": 2.0, "answers_uri": uri}, "error": None})
    settings = judge.Judge(endpoint=scripted_llm.url, model=scripted_llm.models[0])
    with moto_s3(monkeypatch) as bucket:
        cache = f"{bucket}/runs/cache/llm"
        first = of_run.judge_run(results, settings, languages.load("az"), "bits_per_byte", cache_dir=cache)
        again = of_run.judge_run(results, settings, languages.load("az"), "bits_per_byte", cache_dir=cache)
        listing = storage.s3_client().list_objects_v2(Bucket=bucket.removeprefix("s3://"), Prefix="runs/cache/llm/")
        assert len(listing.get("Contents", [])) == 4  # one entry per verdict asked, on S3 (not a local "s3:" folder)
    assert first["tuned"]["judge.calls"] == 4 and again["tuned"]["judge.calls"] == 0
    assert again["tuned"]["judge.win_rate_vs_base"] == first["tuned"]["judge.win_rate_vs_base"] == 0.5
