"""Training data from an s3:// URI, served by a real S3-compatible server (moto) on 127.0.0.1."""

import json

import pytest

from barbarossa import data, storage
from conftest import moto_s3, rows


@pytest.fixture
def s3_server(monkeypatch):
    with moto_s3(monkeypatch) as bucket:
        yield bucket


def test_s3_data_and_outputs_round_trip(s3_server, tmp_path):
    sample = rows(40)
    storage.write_text(f"{s3_server}/in/train.jsonl", "".join(json.dumps(r) + "\n" for r in sample))
    summary = data.prepare(f"{s3_server}/in/train.jsonl", None, f"{s3_server}/runs/1")
    assert summary["train_uri"] == f"{s3_server}/runs/1/data/train.jsonl"
    assert summary["train_rows"] + summary["eval_rows"] == 40
    assert data.read_jsonl(summary["train_uri"]) + data.read_jsonl(summary["eval_uri"]) != []
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    storage.upload_dir(folder, f"{s3_server}/runs/1/cand/adapter")
    back = storage.local_dir(f"{s3_server}/runs/1/cand/adapter", tmp_path / "dl")
    assert (back / "adapter_config.json").read_text() == "{}"


def test_bad_row_in_s3_file_names_the_uri(s3_server):
    bad = rows(3)
    bad[1]["instruction"] = ""
    storage.write_text(f"{s3_server}/bad.jsonl", "".join(json.dumps(r) + "\n" for r in bad))
    with pytest.raises(data.DataError, match=r"s3://barbarossa-test/bad.jsonl: line 2, field 'instruction': empty"):
        data.load(f"{s3_server}/bad.jsonl")
