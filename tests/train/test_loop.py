"""Real LoRA training of tiny models of two families: real gradients, real adapters on disk."""

import pytest
import torch
from conftest import finetune, write_jsonl

from barbarossa.data import instructions, prompts
from barbarossa.engine import loading
from barbarossa.models import families
from barbarossa.train import loop

SETTINGS = {
    "max_steps": 8,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_length": 128,
    "precision": "auto",
    "seed": 0,
    "log_every": 4,
}


def item(family, targets="attention"):
    return {
        "name": f"tiny-{family}",
        "kind": "candidate",
        "base": {"name": family, "source": f"tiny:{family}", "family": family, "max_length": 512},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": targets},
    }


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    records = instructions.load(str(instructions.BUNDLED)).records[:40]
    return instructions.prepare(
        str(write_jsonl(out / "train.jsonl", records)), None, str(out / "run"), eval_fraction=0.2
    )


@pytest.mark.parametrize("family, targets", [("llama", "attention"), ("gpt2", "attention"), ("llama", "all-linear")])
def test_finetune_lowers_training_loss_and_writes_an_adapter(tmp_path, split, family, targets):
    result = finetune(item(family, targets), split, SETTINGS, str(tmp_path / "out"))
    curve = [p["loss"] for p in result["loss_curve"]]
    assert len(curve) == 8 and sum(curve[-2:]) < sum(curve[:2])
    adapter = tmp_path / "out" / "adapter"
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert result["adapter_uri"] == str(adapter) and result["supervised_tokens"] > 0
    assert result["precision"] in ("fp32", "bf16")


def test_gpt2_lora_uses_fan_in_fan_out(tiny_gpt2):
    model = loop.lora_model(loading.load_model(tiny_gpt2, "gpt2"), "gpt2", item("gpt2")["lora"])
    assert model.peft_config["default"].fan_in_fan_out is True
    assert any("c_attn.lora_A" in name for name, _ in model.named_parameters())


def test_unknown_targets_fail_clearly():
    with pytest.raises(ValueError, match="LoRA targets"):
        families.get_family("llama").lora_targets(42)
    with pytest.raises(ValueError, match="unknown architecture family"):
        families.get_family("deci-ish")


def test_pad_batch_masks_padding():
    batch = prompts.pad_batch([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    left = prompts.pad_batch([{"input_ids": [5, 6]}, {"input_ids": [8]}], 0, side="left")
    assert left["input_ids"].tolist() == [[5, 6], [0, 8]] and left["attention_mask"].tolist() == [[1, 1], [0, 1]]


def test_learning_rate_warms_up_then_decays():
    rates = [loop.lr_at(s, 100, 10, 1.0) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] > rates[50] > rates[99] >= 0.1


def test_pack_rows_fills_rows_first_fit_longest_first():
    assert loop.pack_rows([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    assert loop.pack_rows([8, 8], 8) == [[0], [1]]


def test_packed_rows_pad_after_the_last_example_with_ignored_labels():
    examples = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
        {"input_ids": [8, 9], "labels": [-100, 9]},
        {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]},
    ]
    batch = loop.pack_batch(examples, row_tokens=5, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 0], [5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0], [0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 3, 4, -100], [-100, 6, 7, -100, 9]]


def test_packed_batch_is_one_row_without_padding():
    batch = loop.pack_batch(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]


def test_resumed_batches_continue_where_the_stream_stopped():
    examples = [{"i": i} for i in range(10)]
    whole = loop.batches(examples, 3, seed=7)
    first = [next(whole) for _ in range(8)]
    resumed = loop.batches(examples, 3, seed=7, skip=5)
    assert [next(resumed) for _ in range(3)] == first[5:]


KILL_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from conftest import finetune
item, summary, cfg, out = json.loads(sys.argv[1])
result = finetune(item, summary, cfg, out)
print(json.dumps(result))
"""


def test_a_killed_fine_tune_resumes_from_its_checkpoint(tmp_path, split):
    """SIGKILL a real training process mid-run; the rerun continues from the last checkpoint."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, latest_step

    cfg = {**SETTINGS, "max_steps": 60, "checkpoint_every": 5, "batch_size": 8, "log_every": 100}
    script = tmp_path / "train.py"
    script.write_text(KILL_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")))
    killed_out = str(tmp_path / "killed")
    args = json.dumps([item("llama"), split, cfg, killed_out])
    proc = subprocess.Popen([sys.executable, str(script), args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_step(killed_out) < 15:
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = latest_step(killed_out)
    assert 15 <= killed_at < 60 and not (tmp_path / "killed" / "adapter").exists()

    resumed = finetune(item("llama"), split, cfg, killed_out)
    assert resumed["resumed_from_step"] == killed_at and resumed["steps"] == 60
    assert [p["step"] for p in resumed["loss_curve"]] == list(range(1, 61))  # the counter continues, nothing repeats

    straight = finetune(item("llama"), split, cfg, str(tmp_path / "straight"))
    assert straight["resumed_from_step"] == 0
    assert [p["loss"] for p in resumed["loss_curve"]] == pytest.approx(
        [p["loss"] for p in straight["loss_curve"]], abs=1e-4
    )
    from safetensors.torch import load_file

    a = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.parametrize("family", ["opt", "bloom", "mpt"])
def test_padded_families_take_the_response_only_loss_without_full_vocabulary_logits(family):
    """OPT/BLOOM/MPT pad (no packing): the loss over response tokens equals the model's own full-logit loss."""
    from barbarossa.engine import loading as m

    model = m.load_model(m.resolve(f"tiny:{family}"), family).eval()
    examples = [
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9]},
        {"input_ids": [10, 11, 12], "labels": [-100, 11, 12]},
    ]
    batch = loop.make_batch("padded", examples, 64, 0, "cpu")
    assert "targets" in batch  # found on the host, before the batch went to its device
    with torch.no_grad():
        ours = loop.batch_loss(model, batch)
        full = model(**{k: v for k, v in batch.items() if k != "targets"}).loss
    assert ours.item() == pytest.approx(full.item(), rel=1e-5)


def test_padded_batches_are_grouped_by_length_and_still_cover_every_example():
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in [3, 50, 4, 48, 5, 52, 6, 47] * 8]
    stream = loop.batches(examples, 4, seed=3, by_length=True)
    epoch = [next(stream) for _ in range(len(examples) // 4)]
    spreads = [max(len(e["input_ids"]) for e in b) - min(len(e["input_ids"]) for e in b) for b in epoch]
    assert max(spreads) <= 5  # short with short, long with long
    assert sorted(id(e) for b in epoch for e in b) == sorted(id(e) for e in examples)
    again = loop.batches(examples, 4, seed=3, by_length=True, skip=5)  # resumable like the plain stream
    assert next(again) == epoch[5]
