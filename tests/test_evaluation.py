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
