"""Typed settings: one schema read once, a generated reference, and a candidate's own settings used everywhere."""

import dataclasses
import typing

import pytest
from conftest import ROOT, rows, write_jsonl

from barbarossa import config, settings_reference
from barbarossa.data import prompts
from barbarossa.decide import bundles
from barbarossa.engine import loading
from barbarossa.models import roster
from barbarossa.planning import plan
from barbarossa.train import loop


def test_the_settings_reference_is_generated_from_the_schema_and_current():
    reference = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert reference == settings_reference.reference(), (
        "regenerate: python -m barbarossa.settings_reference > docs/settings.md"
    )
    for document in settings_reference.DOCUMENTS:
        assert f"## {document.title}: `{document.file}`" in reference
        for section in _sections(document.tables.values()):
            assert (section.__doc__ or "").strip() in reference
            for spec in config.file_keys(section):
                assert f"| `{spec.name}` |" in reference and spec.metadata["help"]  # every key, with its help


def _sections(tops) -> list:
    """Each documented section and the sub-tables below it."""
    found = []
    for section in tops:
        found.append(section)
        hints = typing.get_type_hints(section)
        found += _sections(
            hints[spec.name]
            for spec in config.file_keys(section)
            if isinstance(hints[spec.name], type) and issubclass(hints[spec.name], config.Section)
        )
    return found


def test_a_section_is_checked_when_built_so_code_cannot_hold_a_bad_value():
    with pytest.raises(config.SettingError, match=r'precision must be one of "auto", "bf16", "fp16", "fp32"'):
        config.Train(precision="bf17")
    with pytest.raises(config.SettingError, match="max_steps must be int, got 2.5"):
        config.Train(max_steps=2.5)
    assert config.Train(learning_rate=1).learning_rate == 1.0 and isinstance(
        config.Train(learning_rate=1).learning_rate, float
    )
    assert config.Eval(extra_metrics=["barbarossa/evaluate/metrics/chrf.py"]).extra_metrics[0].startswith(str(ROOT))
    with pytest.raises(config.SettingError, match="must be 0 or more"):
        config.EarlyStopping(patience=-1)


def test_profile_tables_name_file_table_and_key(tmp_path):
    text = (config.profiles_dir() / "cpu.toml").read_text()
    path = tmp_path / "p.toml"
    for old, new, message in [
        ("max_steps = 16", "max_steps = 0", r"\[train\] max_steps must be at least 1, got 0"),
        ("[eval]", "[evaluation]", r"unknown table\(s\) \[evaluation\]"),
        ("seed = 0", "seed = 0\ndev_rows = 8", r"\[train\] dev_rows was replaced by \[early_stopping\] dev_rows"),
        ("seed = 0", "", r"\[train\] missing key 'seed'"),
    ]:
        path.write_text(text.replace(old, new, 1))
        with pytest.raises(config.ConfigError, match=message) as error:
            config.load_profile(str(path))
        assert str(error.value).startswith(f"{path}: ")
    gpu = config.load_profile("gpu")
    assert gpu.early_stopping.enabled and gpu.early_stopping.patience == 4
    assert not config.load_profile("cpu").early_stopping.enabled  # a profile without the table: off


def test_a_roster_override_is_checked_like_a_profile_key(tmp_path):
    text = (roster.rosters_dir() / "tiny.toml").read_text()
    path = tmp_path / "r.toml"
    path.write_text(text.replace('train = { quantization = "nf4" }', 'train = { quantization = "nf8" }'))
    with pytest.raises(roster.RosterError, match=r"candidate 'tiny-llama-qlora': train override quantization must be"):
        roster.load_roster(path)
    path.write_text(text.replace('train = { quantization = "nf4" }', "train = { dev_rows = 4 }"))
    with pytest.raises(roster.RosterError, match=r"unknown train override\(s\) dev_rows"):
        roster.load_roster(path)


def _rows_around(tokenizer, short: int, long: int) -> list[dict]:
    """Two rows whose prompt leaves room for a response in `long` tokens but not in `short`, then rows that fit."""
    records = rows(12)
    words = records[0]["instruction"].split()
    for record in records[:2]:
        while prompts.build_example(tokenizer, record, short):  # a long response is cut; a long prompt drops the row
            record["instruction"] += " " + " ".join(words)
        assert prompts.build_example(tokenizer, record, long), "the long rows must still fit the profile's length"
    return records


def test_a_candidates_own_max_length_reaches_training_the_preview_the_plan_and_the_model_card(tmp_path):
    profile = config.load_profile("smoke")  # max_length 192
    [candidate] = roster.select("tiny-llama-lora")
    candidate = dataclasses.replace(candidate, train={"max_length": 96})
    [_, item] = roster.work_items([candidate], profile)
    assert item["settings"].train.max_length == 96 and profile.train.max_length == 192

    [planned] = plan.build([candidate], profile)["rows"]
    assert planned["max_length"] == 96 and planned["tokens"] == profile.train.max_steps * 4 * 2 * 96

    tokenizer = loading.load_base_tokenizer(item["base"])
    records = _rows_around(tokenizer, 96, 192)
    preview = loop.masking_preview(item, records, tokenizer)
    assert records[2]["instruction"] in preview[0] and records[0]["instruction"] not in "".join(preview)

    summary = {"train_uri": str(write_jsonl(tmp_path / "train.jsonl", records)), "train_fingerprint": "f" * 16}
    settings = dataclasses.replace(item["settings"], train=item["settings"].train.replace(max_steps=2))
    result = loop.train(item, summary, settings, str(tmp_path / "out")).result
    assert result["dropped_too_long"] == 2 and result["train_examples"] == len(records) - 2

    row = {
        "name": item["name"],
        "adapter_uri": result["adapter_uri"],
        "steps": 2,
        "decision": "release",
        "reasons": ["gains ✓"],
        "eval_loss": 3.1,
        "base_eval_loss": 3.5,
        "chrf": 20.0,
        "base_chrf": 14.0,
        "bleu": 5.0,
        "fidelity": 0.97,
        "degenerate_rate": 0.1,
    }
    bundle = bundles.build_bundle(
        {"row": row, "item": item}, {**summary, "train_source": "t"}, "run", str(tmp_path / "release"), merge=False
    )
    card = (tmp_path / "release" / item["name"] / "README.md").read_text()
    assert bundle["name"] == item["name"] and "max length 96." in card
