from barbarossa.decide import cards

ROWS = [
    {"name": "a", "kind": "candidate", "status": "ok", "eval_loss": 2.0, "base_eval_loss": 3.0},
    {"name": "b", "kind": "candidate", "status": "failed", "eval_loss": None, "base_eval_loss": 3.0},
    {"name": "base", "kind": "baseline", "status": "ok", "eval_loss": 3.0, "base_eval_loss": None},
]


def test_base_vs_tuned_bars_pair_each_ok_candidate_with_its_base():
    spec = cards.base_vs_tuned_spec(ROWS, "eval_loss", "loss")
    assert spec["data"]["values"] == [
        {"candidate": "a", "model": "base", "value": 3.0},
        {"candidate": "a", "model": "tuned", "value": 2.0},
    ]


def test_loss_chart_has_one_point_per_logged_step():
    spec = cards.loss_chart_spec({"a": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]})
    assert [v["step"] for v in spec["data"]["values"]] == [1, 2] and spec["encoding"]["color"]["field"] == "model"


def test_the_training_chart_shows_the_dev_curve_its_base_and_the_best_step_under_the_loss():
    curve = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]
    assert cards.training_chart_spec("a", curve) == cards.loss_chart_spec({"a": curve})  # no dev split: loss only
    dev = {
        "base": 3.1,
        "best_step": 2,
        "curve": [
            {"step": 1, "bits_per_byte": 2.9},
            {"step": 2, "bits_per_byte": 2.7},
            {"step": 3, "bits_per_byte": 2.8},
        ],
    }
    spec = cards.training_chart_spec("a", curve, dev)
    loss, dev_chart = spec["vconcat"]
    assert [v["step"] for v in loss["data"]["values"]] == [1, 2]
    assert [v["bits_per_byte"] for v in dev_chart["data"]["values"]] == [2.9, 2.7, 2.8]
    marks = [layer["mark"]["type"] for layer in dev_chart["layer"]]
    assert marks == ["line", "point", "rule"]
    assert dev_chart["layer"][1]["transform"] == [{"filter": "datum.step == 2"}]
    assert dev_chart["layer"][2]["data"]["values"] == [{"base": 3.1}]


def test_samples_are_grouped_by_prompt_and_empty_answers_are_visible():
    sample = {"instruction": "Paytaxt?", "input": "", "reference": "Bakı.", "generated": ""}
    rows = cards.sample_rows({"m2": [sample], "m1": [dict(sample, generated="Bakı")]})
    assert rows == [["Paytaxt?", "Bakı.", "m1", "Bakı"], ["Paytaxt?", "Bakı.", "m2", "(empty)"]]


def test_extra_eval_sets_and_user_metrics_get_their_own_card_lines():
    rows = [
        {
            "name": "m",
            "custom": {"lengths.count": 3.0},
            "extra_sets": {
                "qa": {
                    "eval_loss": 2.5,
                    "chrf": 11.0,
                    "bleu": 1.0,
                    "fidelity": 0.9,
                    "undetermined_rate": 0.25,
                    "degenerate_rate": 0.1,
                    "rows": 5,
                    "lengths.count": 3.0,
                }
            },
        },
        {"name": "plain"},
    ]
    lines = cards.extra_set_rows(rows)
    assert lines == [
        ["m", "(held-out)", "", "", "", "", "", "lengths.count 3.0"],
        ["m", "qa", "2.500", "11.000", "1.000", "0.900", "0.250", "lengths.count 3.0"],
    ]
