"""The `make gpu-check` peer (TRL's SFTTrainer) on the CPU at bench_gpu's tiny shape: it trains, reports honestly,
and trains the product's objective (same tokens, loss on the response + EOS only)."""

import dataclasses
import math

import pytest

from barbarossa import config
from barbarossa.data import instructions, prompts
from barbarossa.models import tiny
from benchmarks import bench_gpu, peer_trl

LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "attention"}
ROWS = 48


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """bench_gpu's tiny LLaMA saved as a model folder, a training split of shipped rows, bench_gpu's CPU settings."""
    tmp = tmp_path_factory.mktemp("peer")
    tokenizer = tiny.build_tokenizer()
    folder = bench_gpu.build(bench_gpu.TINY, tokenizer, tmp / "tiny", "cpu")
    records = instructions.load("bundled").records[:ROWS]
    too_long = {"instruction": " ".join(r["instruction"] for r in records[:16]), "input": "", "output": "Bəli."}
    train_uri = tmp / "train.jsonl"
    train_uri.write_text(instructions.to_jsonl(records + [too_long]), encoding="utf-8")  # the product drops the last
    cfg = {
        **dataclasses.asdict(config.load_profile("gpu").train),
        "max_steps": 4,
        "log_every": 2,
        "warmup_steps": 1,
        "max_length": 128,
        "batch_size": 4,
    }
    return folder, {"train_uri": str(train_uri)}, cfg, tokenizer


def test_peer_trains_and_reports_a_bench_gpu_row(case):
    folder, split, cfg, _ = case
    row = peer_trl.train_peer(folder, split, cfg, LORA, liger=False, peak_tflops=None)
    assert row["case"] == "tiny LoRA, TRL SFTTrainer" and row["trainer"] == "trl 1.16.0"
    assert row["settings"]["padding_free"] is True and row["settings"]["attention"] == "sdpa"
    assert row["settings"]["dtype"] == "fp32" and row["settings"]["liger"] is False
    assert row["params"] > 0 and row["step_seconds"] > 0
    assert row["real_tokens_per_second"] > 0
    tokens_per_step = row["real_tokens_per_second"] * row["step_seconds"]
    assert 0 < tokens_per_step <= cfg["batch_size"] * cfg["max_length"] * 1.01  # at most the batch's rows, full
    assert row["positions_per_second"] == row["real_tokens_per_second"]  # padding-free: no pad positions
    assert row["mfu"] is None and row["peak_gb"] is None  # no peak, no CUDA: nothing made up
    assert math.isfinite(row["final_loss"]) and row["final_loss"] > 0


def test_liger_without_cuda_is_a_skipped_row_not_a_run(case, monkeypatch):
    folder, split, cfg, _ = case
    monkeypatch.setattr(peer_trl, "liger_available", lambda: False)  # as here; on a GPU box the liger row trains
    row = peer_trl.train_peer(folder, split, cfg, LORA, liger=True, peak_tflops=989)
    assert row == {
        "case": "tiny LoRA, TRL SFTTrainer, liger",
        "trainer": "trl 1.16.0",
        "skipped": "needs CUDA and liger-kernel",
    }


def test_peer_trains_the_products_objective_token_for_token(case):
    """TRL's collated batch holds, per example, the tokens and supervised positions of `prompts.build_example`."""
    folder, split, cfg, tokenizer = case
    trainer, _, _ = peer_trl.build_trainer(folder, split, cfg, LORA)
    packed = trainer.train_dataset
    batch = trainer.data_collator([packed[i] for i in range(len(packed))])  # all packed rows: one padding-free batch
    ids, labels, positions = (batch[k][0].tolist() for k in ("input_ids", "labels", "position_ids"))
    assert "attention_mask" not in batch  # padding-free: position ids restart per example instead
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
    peer = sorted((tuple(ids[a:b]), tuple(labels[a:b])) for a, b in zip(starts, starts[1:]))
    rows = instructions.read_jsonl(split["train_uri"])
    examples = [prompts.build_example(tokenizer, r, cfg["max_length"]) for r in rows]
    assert examples[-1] is None and all(examples[:-1])  # the prompt of the last row leaves no room for an answer
    ours = sorted((tuple(e["input_ids"]), tuple(e["labels"])) for e in examples[:-1])
    assert len(peer) == len(ours) == ROWS  # the same rows: the one the product drops, the peer drops too
    supervised = lambda pairs: [sum(t != prompts.IGNORE_INDEX for t in lab) for _, lab in pairs]  # noqa: E731
    assert supervised(peer) == supervised(ours)  # the same number of supervised tokens per example...
    assert peer == ours  # ...at the same positions of the same token ids
