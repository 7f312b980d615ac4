import math

import torch

from barbarossa import data, evaluation, models, prompts


def test_chrf_metric_module_scores_identity_and_mismatch():
    assert evaluation.chrf(["Bakı gözəl şəhərdir."], ["Bakı gözəl şəhərdir."]) == 100.0
    assert evaluation.chrf(["tamamilə başqa"], ["Bakı gözəl şəhərdir."]) < 20.0


def test_response_loss_matches_a_hand_computed_loss(tiny_llama):
    tokenizer, model = models.load_tokenizer(tiny_llama), models.load_model(tiny_llama, "llama").eval()
    records = data.load(str(data.BUNDLED)).records[:5]
    loss, count = evaluation.response_loss(model, tokenizer, records, 256, batch_size=2)
    total, n = 0.0, 0
    for record in records:  # one at a time, no padding
        example = prompts.build_example(tokenizer, record, 256)
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        labels = torch.tensor(example["labels"][1:])
        keep = labels != prompts.IGNORE_INDEX
        total += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
        n += int(keep.sum())
    assert count == n and math.isclose(loss, total / n, rel_tol=1e-4)


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_gpt2):
    tokenizer, model = models.load_tokenizer(tiny_gpt2), models.load_model(tiny_gpt2, "gpt2").eval()
    records = data.load(str(data.BUNDLED)).records[:4]
    batched = evaluation.generate(model, tokenizer, records, max_new_tokens=6, batch_size=4)
    single = [evaluation.generate(model, tokenizer, [r], max_new_tokens=6, batch_size=1)[0] for r in records]
    assert batched == single and len(batched) == 4


USER_METRIC = '''
import datasets
import evaluate


class Lengths(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="counts", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"count": len(predictions), "reference_words": sum(len(r.split()) for r in references), "note": "x"}
'''


def test_user_eval_sets_and_metric_modules_run_under_the_same_protocol(tmp_path):
    from conftest import rows, write_jsonl

    module = tmp_path / "lengths.py"
    module.write_text(USER_METRIC)
    records = data.load(str(data.BUNDLED)).records
    summary = data.prepare(str(write_jsonl(tmp_path / "train.jsonl", records[:40])), None, str(tmp_path / "run"),
                           eval_fraction=0.2, extra_sets=[{"name": "numbers", "source": str(write_jsonl(tmp_path / "n.jsonl", rows(5)))}])
    [extra] = summary["extra_sets"]
    assert extra["name"] == "numbers" and extra["rows"] == 5 and data.read_jsonl(extra["uri"]) == rows(5)
    item = {"name": "tiny-llama", "kind": "baseline",
            "base": {"name": "tiny-llama", "source": "tiny:llama", "family": "llama", "max_length": 512}}
    cfg = {"max_length": 128, "max_loss_rows": 4, "generate_rows": 3, "max_new_tokens": 4, "batch_size": 2, "samples": 1,
           "extra_metrics": [str(module)]}
    metrics = evaluation.evaluate(item, None, summary, cfg)
    main_refs = data.read_jsonl(summary["eval_uri"])[:3]
    assert metrics["custom"] == {"lengths.count": 3.0, "lengths.reference_words": float(sum(len(r["output"].split()) for r in main_refs))}
    numbers = metrics["extra_sets"]["numbers"]
    assert numbers["rows"] == 5 and numbers["lengths.count"] == 3.0 and numbers["eval_loss"] > 0
    assert {"chrf", "bleu", "az_fidelity", "degenerate_rate"} <= set(numbers)
    assert numbers["lengths.reference_words"] == sum(len(r["output"].split()) for r in rows(5)[:3])


def test_a_bad_row_in_an_extra_eval_set_stops_before_anything_is_written(tmp_path):
    import pytest

    from conftest import rows, write_jsonl

    bad = rows(4)
    bad[2]["output"] = ""
    with pytest.raises(data.DataError, match=r"x.jsonl: line 3, field 'output': empty"):
        data.prepare(str(write_jsonl(tmp_path / "train.jsonl", rows(30))), None, str(tmp_path / "run"),
                     extra_sets=[{"name": "x", "source": str(write_jsonl(tmp_path / "x.jsonl", bad))}])
    assert not (tmp_path / "run").exists()
