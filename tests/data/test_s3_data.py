"""Training data from an s3:// URI, served by a real S3-compatible server (moto) on 127.0.0.1."""

import json

import pytest
from conftest import moto_s3, rows

from barbarossa import storage
from barbarossa.data import instructions

pytestmark = pytest.mark.server


@pytest.fixture
def s3_server(monkeypatch):
    with moto_s3(monkeypatch) as bucket:
        yield bucket


def test_s3_data_and_outputs_round_trip(s3_server, tmp_path):
    sample = rows(40)  # Azerbaijani letters: UTF-8 must survive the trip
    storage.write_text(f"{s3_server}/in/train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample))
    summary = instructions.prepare(f"{s3_server}/in/train.jsonl", None, f"{s3_server}/runs/1")
    assert summary["train_uri"] == f"{s3_server}/runs/1/data/train.jsonl"
    assert summary["eval_uri"] == f"{s3_server}/runs/1/data/eval.jsonl"
    train, held = instructions.read_jsonl(summary["train_uri"]), instructions.read_jsonl(summary["eval_uri"])
    assert train and held and (len(train), len(held)) == (summary["train_rows"], summary["eval_rows"])
    # every input row comes back exactly once, unchanged, in its split, in input order
    assert held == [r for r in sample if r in held] and train == [r for r in sample if r not in held]
    assert summary["train_fingerprint"] == instructions.fingerprint(train) and summary[
        "eval_fingerprint"
    ] == instructions.fingerprint(held)
    files = {
        "adapter_config.json": b'{"r": 4}',
        "adapter_model.safetensors": bytes(range(256)) * 300,
        "tokenizer/vocab.txt": "ə ş ç ğ ı ö ü\n".encode(),
    }
    folder = tmp_path / "adapter"
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    storage.upload_dir(folder, f"{s3_server}/runs/1/cand/adapter")
    back = storage.local_dir(f"{s3_server}/runs/1/cand/adapter", tmp_path / "dl")
    assert {p.relative_to(back).as_posix(): p.read_bytes() for p in back.rglob("*") if p.is_file()} == files


def test_bad_row_in_s3_file_names_the_uri(s3_server):
    bad = rows(3)
    bad[1]["instruction"] = ""
    storage.write_text(f"{s3_server}/bad.jsonl", "".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(
        instructions.DataError, match=r"s3://barbarossa-test/bad.jsonl: line 2, field 'instruction': empty"
    ):
        instructions.load(f"{s3_server}/bad.jsonl")
