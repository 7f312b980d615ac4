"""Shared-prefix batches: grouping, chunking, and equality with the unshared batch for every causal family."""

import pytest

from barbarossa.config import Train
from barbarossa.data import instructions, prompts
from barbarossa.engine import loading, shared_prefix
from barbarossa.models import families
from barbarossa.train import loop

A = list(range(100, 110))  # a 10-token "preamble"
B = A[:3] + list(range(200, 209))  # shares 3 tokens with A


def test_groups_share_the_longest_common_prefix_and_leave_strangers_alone():
    seqs = [A + [1, 2], A + [3], B + [4], A + [5, 6, 7], [9, 9, 9]]
    groups = shared_prefix.prefix_groups(seqs, caps=[100] * 5, min_shared=2)
    assert sorted((sorted(m), s) for m, s in groups) == [([0, 1, 3], 10), ([2], 0), ([4], 0)]


def test_a_prefix_stops_at_the_shortest_cap_and_below_min_shared_nothing_is_shared():
    seqs = [A + [1], A + [2], A + [3]]
    assert shared_prefix.prefix_groups(seqs, caps=[10, 6, 10], min_shared=2) == [([0, 1, 2], 6)]
    assert sorted(shared_prefix.prefix_groups(seqs, caps=[4, 4, 4], min_shared=8)) == [([0], 0), ([1], 0), ([2], 0)]


def test_grouping_keeps_two_long_prefixes_apart_rather_than_merge_them_on_a_short_one():
    seqs = [A + [1], A + [2], A + [3], B + [4], B + [5]]
    groups = shared_prefix.prefix_groups(seqs, caps=[100] * 5, min_shared=2)
    assert sorted((sorted(m), s) for m, s in groups) == [([0, 1, 2], 10), ([3, 4], 12)]


def test_length_chunks_cover_every_index_once_and_trade_padding_against_calls():
    lengths = [50, 200, 60, 190, 55, 120]
    for cost in (0, 128, 10_000):
        chunks = shared_prefix.length_chunks(lengths, cost)
        assert sorted(i for c in chunks for i in c) == list(range(6))
    assert len(shared_prefix.length_chunks(lengths, 10_000)) == 1
    assert sorted(map(sorted, shared_prefix.length_chunks(lengths, 0))) == [[0], [1], [2], [3], [4], [5]]
    assert sorted(map(sorted, shared_prefix.length_chunks(lengths, 40))) == [[0, 2, 4], [1, 3], [5]]


def _examples(tokenizer) -> list[dict]:
    """Eight bundled rows with and without input (two preambles), one made to share nothing."""
    records = instructions.load(str(instructions.BUNDLED)).records
    rows = [r for r in records if r["input"]][:4] + [r for r in records if not r["input"]][:4]
    examples = [prompts.build_example(tokenizer, r, 192) for r in rows]
    odd = examples[7]
    examples[7] = {"input_ids": [tokenizer.eos_token_id] + odd["input_ids"][1:], "labels": odd["labels"]}
    return examples


def test_a_shared_prefix_batch_holds_every_example_exactly_once():
    tokenizer = loading.load_tokenizer(loading.resolve("tiny:llama"))
    examples = _examples(tokenizer)
    batch = shared_prefix.shared_prefix_batch(examples, tokenizer.pad_token_id)
    rebuilt = []
    for chunk in batch["chunks"]:
        for ids, labels, mask, start, group in zip(
            chunk["input_ids"], chunk["labels"], chunk["mask"], chunk["start"], chunk["group"]
        ):
            prefix = batch["prefixes"][group] if group < len(batch["prefixes"]) else []
            assert len(prefix) == start
            rebuilt.append((prefix + ids[: sum(mask)], [prompts.IGNORE_INDEX] * start + labels[: sum(mask)]))
    assert sorted(rebuilt) == sorted((e["input_ids"], e["labels"]) for e in examples)
    assert batch["computed"] < sum(len(e["input_ids"]) for e in examples)


@pytest.mark.parametrize("family", sorted(f for f, spec in families.FAMILIES.items() if spec.shares_prefix))
def test_shared_prefix_batch_gives_the_loss_and_gradients_of_the_plain_batch(family):
    import torch

    spec = families.get_family(family)
    folder = loading.resolve(f"tiny:{family}")
    tokenizer = loading.load_tokenizer(folder, remote_code=spec.remote_code)
    model = loading.load_model(folder, family, remote_code=spec.remote_code)
    torch.manual_seed(0)
    model = loop.lora_model(model, family, {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"})
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero B, so every LoRA matrix gets a gradient
            torch.nn.init.normal_(param, std=0.05)
    model.eval()  # dropout off: the two layouts would draw different masks
    examples = _examples(tokenizer)
    batch = shared_prefix.shared_prefix_batch(examples, tokenizer.pad_token_id)
    lengths = {len(p) for p in batch["prefixes"]}
    assert len(lengths) == 2 and any(
        len(batch["prefixes"]) in c["group"] for c in batch["chunks"]
    )  # two preambles + a loner

    def loss_and_grads(loss):
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        return loss.item(), grads

    plain, plain_grads = loss_and_grads(loop.batch_loss(model, prompts.pad_batch(examples, tokenizer.pad_token_id)))
    shared, shared_grads = loss_and_grads(loop.batch_loss(model, batch))
    assert shared == pytest.approx(plain, abs=1e-5)
    assert max((shared_grads[n] - plain_grads[n]).abs().max().item() for n in plain_grads) < 1e-5
    assert max(g.abs().max().item() for g in plain_grads.values()) > 1e-4  # the comparison is not of zeros


def test_every_causal_family_but_remote_code_shares_prefixes():
    assert {f for f, spec in families.FAMILIES.items() if spec.shares_prefix} == {
        f for f, spec in families.FAMILIES.items() if spec.task == "causal"
    } - {"deci"}


def test_layout_follows_family_and_settings():
    llama, opt, t5, deci = (families.get_family(f) for f in ("llama", "opt", "t5", "deci"))
    assert loop.choose_layout(deci, Train(share_prefix=True)) == "packed"  # remote code may predate the Cache API
    assert loop.choose_layout(llama, Train(share_prefix=True)) == "shared-prefix"
    assert loop.choose_layout(opt, Train(share_prefix=True)) == "shared-prefix"
    assert loop.choose_layout(llama, Train(share_prefix=True, gradient_checkpointing=True)) == "packed"
    assert loop.choose_layout(opt, Train(share_prefix=True, gradient_checkpointing=True)) == "padded"
    assert loop.choose_layout(llama, Train(share_prefix=False, packing=False)) == "padded"
    assert loop.choose_layout(t5, Train(share_prefix=True)) == "padded"


CHOICE_ITEMS = [
    (
        "Bakı hansı dənizin sahilindədir?",
        "Bakı Xəzər dənizinin sahilində, Abşeron yarımadasındadır.",
        ["Qara dənizin", "Xəzər dənizinin", "Aralıq dənizinin sahilində yerləşir", "Heç birinin"],
    ),
    ("Su neçə dərəcədə qaynayır?", "", ["100", "50 dərəcədə", "0", "200 dərəcədə, təzyiqdən asılı olmayaraq"]),
]


@pytest.mark.parametrize("family", sorted(f for f, spec in families.FAMILIES.items() if spec.shares_prefix))
def test_choice_scoring_with_the_prompt_shared_equals_scoring_each_choice_alone(family):
    """The benchmarks' multiple-choice rows: each item's prompt runs once for its four choices, same numbers."""
    from barbarossa.engine import scoring

    spec = families.get_family(family)
    folder = loading.resolve(f"tiny:{family}")
    tokenizer = loading.load_tokenizer(folder, remote_code=spec.remote_code)
    model = loading.load_model(folder, family, remote_code=spec.remote_code).eval()
    records = [
        {"instruction": q, "input": context, "output": choice}
        for q, context, choices in CHOICE_ITEMS
        for choice in choices
    ]
    alone = scoring.response_nll(model, tokenizer, records, 512, 8)
    shared = scoring.response_nll(model, tokenizer, records, 512, 8, share_prompts=True)
    assert shared["tokens"] == alone["tokens"] and shared["bytes"] == alone["bytes"] and all(alone["bytes"])
    assert shared["nll"] == pytest.approx(alone["nll"], abs=1e-4)
    examples = prompts.build_examples(tokenizer, records, 512)
    batch = shared_prefix.shared_prefix_batch(examples, tokenizer.pad_token_id)
    assert len(batch["prefixes"]) == 2 and batch["computed"] < 0.6 * sum(len(e["input_ids"]) for e in examples)
