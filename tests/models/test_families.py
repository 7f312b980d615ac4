"""Every architecture family of the roster, end to end on a tiny random model.

Build → LoRA fine-tune through the real trainer on a repeated batch (the loss
must fall) → save the adapter → reload it onto a fresh base → held-out loss and
generation through the real evaluator. T5 takes the seq2seq path; DeciLM the
remote-code path.
"""

import pytest
from conftest import finetune, settings_for, write_jsonl

from barbarossa.data import instructions
from barbarossa.engine import losses
from barbarossa.evaluate import protocol
from barbarossa.models import families, roster
from barbarossa.train import loop

TRAIN = {
    "max_steps": 6,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 2e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 160,
    "precision": "auto",
    "seed": 0,
    "log_every": 3,
}
EVAL = {"max_length": 160, "max_loss_rows": 4, "generate_rows": 2, "max_new_tokens": 4, "batch_size": 2, "samples": 1}


@pytest.fixture(scope="module")
def repeated_batch(tmp_path_factory):
    """Four short rows: with batch size 4 every step sees the same batch."""
    out = tmp_path_factory.mktemp("fam")
    records = sorted(
        instructions.load(str(instructions.BUNDLED)).records, key=lambda r: len(r["output"]) + len(r["input"])
    )[:4]
    path = str(write_jsonl(out / "four.jsonl", records))
    return {"train_uri": path, "eval_uri": path}  # deliberately the same rows: this checks plumbing, not learning


def test_every_roster_family_is_covered():
    seed_families = {c.base.family for c in roster.all_rosters()["seed"].candidates}
    assert seed_families | {"stablelm"} == set(families.FAMILIES) and len(families.FAMILIES) == 11


@pytest.mark.parametrize("family", sorted(families.FAMILIES))
def test_family_fine_tunes_reloads_and_generates(family, repeated_batch, tmp_path):
    spec = families.get_family(family)
    base = {
        "name": f"tiny-{family}",
        "source": f"tiny:{family}",
        "family": family,
        "max_length": 512,
        "remote_code": spec.remote_code,
    }
    item = {
        "name": f"tiny-{family}-lora",
        "kind": "candidate",
        "base": base,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"},
    }
    summary = repeated_batch
    result = finetune(item, summary, TRAIN, str(tmp_path))
    curve = [p["loss"] for p in result["loss_curve"]]
    assert curve[-1] < curve[0], curve
    metrics = protocol.evaluate(
        item, result["adapter_uri"], summary, settings_for(item, TRAIN, EVAL)
    )  # reloads the adapter onto the base
    base_metrics = protocol.evaluate({**item, "kind": "baseline"}, None, summary, settings_for(item, eval=EVAL))
    assert metrics["eval_loss"] < base_metrics["eval_loss"]  # the adapter really was applied
    assert metrics["generated"] == 2 and all(isinstance(s["generated"], str) for s in metrics["samples"])


ROW_TOKENS = 300


def _per_example_losses(family: str, packed: bool) -> list[float]:
    """Mean response loss of each of six examples: packed into rows, or each alone."""
    import torch

    from barbarossa.data import prompts
    from barbarossa.engine import loading

    spec = families.get_family(family)
    folder = loading.resolve(f"tiny:{family}")
    tokenizer = loading.load_tokenizer(folder, remote_code=spec.remote_code)
    model = loading.load_model(folder, family, remote_code=spec.remote_code).eval()
    rows = instructions.load(str(instructions.BUNDLED)).records[:6]
    examples = [prompts.build_example(tokenizer, r, 192) for r in rows]
    with torch.no_grad():
        if not packed:
            return [loop.batch_loss(model, prompts.pad_batch([e], tokenizer.pad_token_id)).item() for e in examples]
        batch = loop.pack_batch(examples, ROW_TOKENS, tokenizer.pad_token_id)
        token_losses = losses.packed_token_losses(model, batch)
    assert 1 < batch["input_ids"].shape[0] < len(examples)  # several rows, some holding several examples
    order = [i for group in loop.pack_rows([len(e["input_ids"]) for e in examples], ROW_TOKENS) for i in group]
    counts = [sum(label != prompts.IGNORE_INDEX for label in examples[i]["labels"][1:]) for i in order]
    bounds = [sum(counts[:i]) for i in range(len(counts) + 1)]
    by_example = dict(zip(order, (token_losses[a:b].mean().item() for a, b in zip(bounds, bounds[1:]))))
    return [by_example[i] for i in range(len(examples))]


@pytest.mark.parametrize("family", sorted(f for f, spec in families.FAMILIES.items() if spec.packs))
def test_packed_row_gives_each_example_the_loss_it_has_alone(family):
    assert _per_example_losses(family, packed=True) == pytest.approx(
        _per_example_losses(family, packed=False), abs=1e-5
    )


LEAK = 1e-4  # a loss change this large is no float noise: layouts that separate examples agree to ~1e-6


def _second_example_losses(family: str):
    """Per-token losses of example B after example A and after A' (A's length, other tokens): packed
    into one row, padded into separate rows; and B alone. Only B's tokens are scored."""
    import torch

    from barbarossa.data import prompts
    from barbarossa.engine import loading

    spec = families.get_family(family)
    folder = loading.resolve(f"tiny:{family}")
    tokenizer = loading.load_tokenizer(folder, remote_code=spec.remote_code)
    model = loading.load_model(folder, family, remote_code=spec.remote_code).eval()
    vocab = model.get_input_embeddings().weight.shape[0]
    a, b = (prompts.build_example(tokenizer, r, 192) for r in instructions.load(str(instructions.BUNDLED)).records[:2])
    firsts = [a["input_ids"], a["input_ids"][:1] + [(t + 17) % vocab for t in a["input_ids"][1:]]]
    unscored = [{"input_ids": ids, "labels": [prompts.IGNORE_INDEX] * len(ids)} for ids in firsts]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        packed = [losses.packed_token_losses(model, loop.pack_batch([first, b], None, pad)) for first in unscored]
        padded = [losses.padded_token_losses(model, prompts.pad_batch([first, b], pad)) for first in unscored]
        alone = losses.padded_token_losses(model, prompts.pad_batch([b], pad))
    assert loop.pack_batch(unscored[:1] + [b], None, pad)["input_ids"].shape[0] == 1  # A and B share one row
    assert len(alone) == sum(label != prompts.IGNORE_INDEX for label in b["labels"][1:]) > 10
    assert all(len(losses) == len(alone) for losses in packed + padded)
    return packed, padded, alone


@pytest.mark.parametrize(
    "family", sorted(f for f, spec in families.FAMILIES.items() if spec.task == "causal" and not spec.packs)
)
def test_families_marked_not_packing_really_would_leak_across_examples(family):
    """OPT / BLOOM / MPT ignore restarting position ids: packed, example B attends to example A, so they pad.

    The leak itself: B's loss changes when only A's tokens change (and differs from B's loss alone),
    while in separate padded rows B's loss is B's loss alone, whatever A says."""
    packed, padded, alone = _second_example_losses(family)
    assert float((packed[0] - packed[1]).abs().max()) > LEAK  # what A says reaches B
    assert float((packed[0] - alone).abs().max()) > LEAK
    for row in padded:
        assert float((row - alone).abs().max()) < 1e-6


def test_the_leak_measure_finds_none_where_packing_separates_examples():
    packed, padded, alone = _second_example_losses("llama")  # a family that packs: position ids restart per example
    for row in packed + padded:
        assert float((row - alone).abs().max()) < 1e-5
