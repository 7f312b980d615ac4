import math
import types

import numpy as np
import pytest
import torch
from conftest import settings_for

from barbarossa.data import instructions, prompts
from barbarossa.engine import loading, scoring
from barbarossa.evaluate import protocol


def test_chrf_metric_module_scores_identity_and_mismatch():
    assert protocol.chrf(["Bakı gözəl şəhərdir."], ["Bakı gözəl şəhərdir."]) == 100.0
    assert protocol.chrf(["tamamilə başqa"], ["Bakı gözəl şəhərdir."]) < 20.0


def test_response_loss_matches_a_hand_computed_loss(tiny_llama):
    tokenizer, model = loading.load_tokenizer(tiny_llama), loading.load_model(tiny_llama, "llama").eval()
    records = instructions.load(str(instructions.BUNDLED)).records[:5]
    loss, count = protocol.response_loss(model, tokenizer, records, 256, batch_size=2)
    per_row = protocol.response_nll(model, tokenizer, records, 256, batch_size=2)
    sums, counts = [], []
    for record in records:  # one at a time, no padding
        example = prompts.build_example(tokenizer, record, 256)
        ids = torch.tensor([example["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        labels = torch.tensor(example["labels"][1:])
        keep = labels != prompts.IGNORE_INDEX
        sums.append(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item())
        counts.append(int(keep.sum()))
    assert count == sum(counts) and math.isclose(loss, sum(sums) / sum(counts), rel_tol=1e-4)
    assert per_row["tokens"] == counts and per_row["nll"] == pytest.approx(sums, rel=1e-4)  # in record order


def byte_bigram():
    """A fixed byte-level language model: log p(next byte | byte), add-one counts over the bundled responses.

    Index 256 is the start (as the previous byte) and the end of the text (as the next one).
    """
    counts = np.ones((257, 257))
    for record in instructions.load(str(instructions.BUNDLED)).records:
        previous = 256
        for byte in record["output"].encode("utf-8"):
            counts[previous, byte] += 1
            previous = byte
        counts[previous, 256] += 1
    return np.log(counts / counts.sum(1, keepdims=True))


def token_losses(tokenizer, text: str, log_p) -> list[float]:
    """Per-token NLL, under the byte model, of the tokenizer's segmentation of `text`, then EOS (ending the text)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    pieces = [bytes(to_byte[c] for c in token) for token in tokenizer.tokenize(text)]
    assert b"".join(pieces) == text.encode("utf-8")  # the tokens cover exactly the text's bytes
    losses, previous = [], 256
    for piece in pieces:  # a token's probability is the product of its bytes' (chain rule)
        losses.append(-sum(log_p[p, b] for p, b in zip((previous, *piece[:-1]), piece)))
        previous = piece[-1]
    return losses + [-log_p[previous, 256]]


def test_bits_per_byte_does_not_depend_on_the_tokenizer_per_token_loss_does():
    """Model-free: one byte-level distribution scored through two segmentations (byte-level BPE of 257 and 1024 tokens).

    The whole response's NLL (EOS included: one end decision whatever the
    segmentation) is the same, so its bits per byte is; only the token count —
    and so the per-token loss — changes.
    """
    from barbarossa.models import tiny

    log_p, texts = byte_bigram(), AZ_TEXTS
    found = {}
    for vocab in (257, 1024):
        tokenizer = tiny.build_tokenizer(vocab)
        per_text = [token_losses(tokenizer, text, log_p) for text in texts]
        counts = [len(losses) for losses in per_text]
        nll = scoring.row_sums(torch.tensor([x for losses in per_text for x in losses], dtype=torch.float64), counts)
        found[vocab] = protocol.loss_metrics({"nll": nll, "tokens": counts, "bytes": [len(t.encode()) for t in texts]})
    assert found[257]["eval_loss"] < 0.6 * found[1024]["eval_loss"]  # bytes are easier to predict one by one
    assert found[257]["bits_per_byte"] == pytest.approx(found[1024]["bits_per_byte"], rel=1e-6)


AZ_TEXTS = [
    "Bakı Azərbaycanın paytaxtıdır və Xəzər dənizinin sahilində yerləşir.",
    "Şəhərin mərkəzində yeni bir park salınıb.",
    "Çörək, pendir və çay.",
]


def test_evaluation_reports_bits_per_byte_of_the_responses_it_scored_whole(tiny_llama, tmp_path):
    """End to end: bits per byte = eval_loss × tokens / (ln 2 × bytes); a response cut at max_length adds nothing
    to it."""
    from conftest import write_jsonl

    records = instructions.load(str(instructions.BUNDLED)).records[:8]
    summary = {"eval_uri": str(write_jsonl(tmp_path / "eval.jsonl", records))}
    item = {
        "name": "tiny-llama",
        "kind": "baseline",
        "base": {"name": "tiny-llama", "source": "tiny:llama", "family": "llama", "max_length": 1024},
    }
    cfg = {
        "max_length": 1024,
        "max_loss_rows": 8,
        "generate_rows": 2,
        "max_new_tokens": 2,
        "batch_size": 3,
        "samples": 1,
    }
    whole = protocol.evaluate(item, None, summary, settings_for(item, eval=cfg))
    assert whole["eval_bytes"] == sum(len(r["output"].encode("utf-8")) for r in records)
    assert whole["bits_per_byte"] == pytest.approx(
        whole["eval_loss"] * whole["eval_tokens"] / (math.log(2) * whole["eval_bytes"]), rel=1e-4
    )
    rows = whole["per_row"]["heldout"]
    assert len(rows["nll"]) == len(rows["tokens"]) == 8 and len(rows["chrf"]) == len(rows["fidelity"]) == 2

    tokenizer = loading.load_tokenizer(tiny_llama)
    lengths = sorted(len(prompts.build_example(tokenizer, r, 1024)["input_ids"]) for r in records)
    cut = protocol.evaluate(
        item, None, summary, settings_for(item, eval={**cfg, "max_length": lengths[4] - 2})
    )  # the longer half is cut
    rows = cut["per_row"]["heldout"]
    kept = [i for i, size in enumerate(rows["bytes"]) if size]
    scored_in_part = [i for i, size in enumerate(rows["bytes"]) if rows["tokens"][i] and not size]
    assert kept and scored_in_part
    assert cut["eval_bytes"] == sum(rows["bytes"]) < whole["eval_bytes"]
    assert cut["bits_per_byte"] == pytest.approx(
        sum(rows["nll"][i] for i in kept) / (math.log(2) * sum(rows["bytes"][i] for i in kept)), rel=1e-5
    )
    assert cut["eval_loss"] == pytest.approx(
        sum(rows["nll"]) / sum(rows["tokens"]), rel=1e-5
    )  # cut rows still count here


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_gpt2):
    tokenizer, model = loading.load_tokenizer(tiny_gpt2), loading.load_model(tiny_gpt2, "gpt2").eval()
    records = instructions.load(str(instructions.BUNDLED)).records[:4]
    batched = protocol.generate(model, tokenizer, records, max_new_tokens=6, batch_size=4)
    single = [protocol.generate(model, tokenizer, [r], max_new_tokens=6, batch_size=1)[0] for r in records]
    assert batched == single and len(batched) == 4


USER_METRIC = """
import datasets
import evaluate


class Lengths(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="counts", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"count": len(predictions), "reference_words": sum(len(r.split()) for r in references), "note": "x"}
"""


def test_user_eval_sets_and_metric_modules_run_under_the_same_protocol(tmp_path):
    from conftest import rows, write_jsonl

    module = tmp_path / "lengths.py"
    module.write_text(USER_METRIC)
    records = instructions.load(str(instructions.BUNDLED)).records
    summary = instructions.prepare(
        str(write_jsonl(tmp_path / "train.jsonl", records[:40])),
        None,
        str(tmp_path / "run"),
        eval_fraction=0.2,
        extra_sets=[{"name": "numbers", "source": str(write_jsonl(tmp_path / "n.jsonl", rows(5)))}],
    )
    [extra] = summary["extra_sets"]
    assert extra["name"] == "numbers" and extra["rows"] == 5 and instructions.read_jsonl(extra["uri"]) == rows(5)
    item = {
        "name": "tiny-llama",
        "kind": "baseline",
        "base": {"name": "tiny-llama", "source": "tiny:llama", "family": "llama", "max_length": 512},
    }
    cfg = {
        "max_length": 128,
        "max_loss_rows": 4,
        "generate_rows": 3,
        "max_new_tokens": 4,
        "batch_size": 2,
        "samples": 1,
        "extra_metrics": [str(module)],
    }
    answers = tmp_path / "run" / "tiny-llama" / "answers.jsonl"
    metrics = protocol.evaluate(item, None, summary, settings_for(item, eval=cfg), answers_uri=str(answers))
    main_refs = instructions.read_jsonl(summary["eval_uri"])[:3]
    written = instructions.read_jsonl(metrics["answers_uri"])  # every greedy answer, beside its prompt
    assert [(r["instruction"], r["reference"]) for r in written] == [(r["instruction"], r["output"]) for r in main_refs]
    assert metrics["samples"] == written[:1] and all(isinstance(r["generated"], str) for r in written)
    assert metrics["custom"] == {
        "lengths.count": 3.0,
        "lengths.reference_words": float(sum(len(r["output"].split()) for r in main_refs)),
    }
    numbers = metrics["extra_sets"]["numbers"]
    assert numbers["rows"] == 5 and numbers["lengths.count"] == 3.0 and numbers["eval_loss"] > 0
    assert numbers["bits_per_byte"] > 0
    assert (
        "nll" not in numbers and len(metrics["per_row"]["extra_sets"]["numbers"]["nll"]) == 4
    )  # per-row numbers apart
    assert {"chrf", "bleu", "fidelity", "degenerate_rate"} <= set(numbers)
    assert numbers["lengths.reference_words"] == sum(len(r["output"].split()) for r in rows(5)[:3])


ONE_NUMBER_METRIC = """
import datasets
import evaluate


class Exact(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="exact matches", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("string"),
                                                               "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"matches": sum(p == r for p, r in zip(predictions, references)), "note": "not a number"}
"""


def test_a_metric_module_with_one_number_is_keyed_by_its_file_name(tmp_path):
    module = tmp_path / "exact_matches.py"
    module.write_text(ONE_NUMBER_METRIC)
    scores = protocol.extra_metric_scores([str(module)], ["Bakı", "Gəncə", "Şəki"], ["Bakı", "Sumqayıt", "Şəki"])
    assert scores == {"exact_matches": 2.0}


def test_a_bad_row_in_an_extra_eval_set_stops_before_anything_is_written(tmp_path):
    from conftest import rows, write_jsonl

    bad = rows(4)
    bad[2]["output"] = ""
    with pytest.raises(instructions.DataError, match=r"x.jsonl: line 3, field 'output': empty"):
        instructions.prepare(
            str(write_jsonl(tmp_path / "train.jsonl", rows(30))),
            None,
            str(tmp_path / "run"),
            extra_sets=[{"name": "x", "source": str(write_jsonl(tmp_path / "x.jsonl", bad))}],
        )
    assert not (tmp_path / "run").exists()


def test_evaluation_batches_on_a_gpu_fit_the_lease_not_the_card_s_free_memory(monkeypatch):
    from barbarossa.evaluate import decoding

    weight = types.SimpleNamespace(device=torch.device("cuda"))  # no CUDA needed: only the device's type is read
    config = types.SimpleNamespace(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)
    model = types.SimpleNamespace(config=config, parameters=lambda: iter([weight]))
    per_row = 2 * 24 * 1024 * 2 * 100 * 3  # KV cache and activations of a 100-token row
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (60e9, 80e9))  # what others leased is free now
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 4e9)  # this task's weights
    monkeypatch.delenv("BARBAROSSA_GPU_BUDGET_GB", raising=False)
    assert decoding.device_batch_size(model, 8, 100, 10_000) == 256
    monkeypatch.setenv("BARBAROSSA_GPU_BUDGET_GB", "6")
    assert decoding.device_batch_size(model, 8, 100, 10_000) == int(2e9 * 0.25 // per_row)  # (6 - 4) GB of lease left
    monkeypatch.setenv("BARBAROSSA_GPU_BUDGET_GB", "3")
    assert decoding.device_batch_size(model, 8, 100, 10_000) == 8  # the lease is spent: the profile's batch
