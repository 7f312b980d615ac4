from barbarossa import cards

ROWS = [
    {"name": "a", "kind": "candidate", "status": "ok", "eval_loss": 2.0, "base_eval_loss": 3.0},
    {"name": "b", "kind": "candidate", "status": "failed", "eval_loss": None, "base_eval_loss": 3.0},
    {"name": "base", "kind": "baseline", "status": "ok", "eval_loss": 3.0, "base_eval_loss": None},
]


def test_base_vs_tuned_bars_pair_each_ok_candidate_with_its_base():
    spec = cards.base_vs_tuned_spec(ROWS, "eval_loss", "loss")
    assert spec["data"]["values"] == [{"candidate": "a", "model": "base", "value": 3.0},
                                      {"candidate": "a", "model": "tuned", "value": 2.0}]


def test_loss_chart_has_one_point_per_logged_step():
    spec = cards.loss_chart_spec({"a": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]})
    assert [v["step"] for v in spec["data"]["values"]] == [1, 2] and spec["encoding"]["color"]["field"] == "model"


def test_samples_are_grouped_by_prompt_and_empty_answers_are_visible():
    sample = {"instruction": "Paytaxt?", "input": "", "reference": "Bakı.", "generated": ""}
    rows = cards.sample_rows({"m2": [sample], "m1": [dict(sample, generated="Bakı")]})
    assert rows == [["Paytaxt?", "Bakı.", "m1", "Bakı"], ["Paytaxt?", "Bakı.", "m2", "(empty)"]]
