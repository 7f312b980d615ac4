"""Which candidates a run's judge compares: every evaluated one, or the best top-k by the primary metric."""

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
