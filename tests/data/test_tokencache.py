"""Tokenised examples cached once per tokenizer and data: equal to tokenising, read back instead of recomputed."""

import subprocess
import sys

import pytest
from conftest import ROOT, CountingTokenizer, eos_appending, moto_s3

from barbarossa import storage
from barbarossa.data import instructions, prompts, tokencache
from barbarossa.engine import loading
from barbarossa.models import tiny


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The bundled data prepared as the flow's start step does."""
    return instructions.prepare(str(instructions.BUNDLED), None, str(tmp_path_factory.mktemp("run")))


def _cached(tokenizer, split, root, max_length=128, task="causal"):
    return tokencache.examples_for(
        tokenizer, split["train_uri"], split["train_fingerprint"], max_length, task, str(root)
    )


def _tokenised(tokenizer, split, max_length=128, task="causal"):
    built = prompts.build_examples(tokenizer, instructions.read_jsonl(split["train_uri"]), max_length, task=task)
    return [e for e in built if e is not None], built.count(None)


@pytest.mark.parametrize("task", ["causal", "seq2seq"])
def test_first_call_tokenises_and_writes_one_file_later_calls_read_it(tiny_gpt2, split, tmp_path, task):
    first = CountingTokenizer(loading.load_tokenizer(tiny_gpt2))
    examples, dropped = _cached(first, split, tmp_path, task=task)
    assert first.calls == 2 and (examples, dropped) == _tokenised(first.tokenizer, split, task=task)
    assert dropped > 0  # max_length 128 drops some rows of the bundled data
    [written] = (tmp_path / "tokens").iterdir()
    assert written.suffix == ".npz"
    again = CountingTokenizer(loading.load_tokenizer(tiny_gpt2))  # another task: a fresh tokenizer object
    assert _cached(again, split, tmp_path, task=task) == (examples, dropped) and again.calls == 0


def test_warm_writes_the_file_the_training_tasks_read(tiny_gpt2, split, tmp_path):
    tokenizer = CountingTokenizer(loading.load_tokenizer(tiny_gpt2))
    uri = tokencache.warm(tokenizer, split["train_uri"], split["train_fingerprint"], 128, "causal", str(tmp_path))
    assert storage.exists(uri) and tokenizer.calls == 2
    assert (
        tokencache.warm(tokenizer, split["train_uri"], split["train_fingerprint"], 128, "causal", str(tmp_path)) == uri
    )
    assert tokenizer.calls == 2  # warm twice (two bases, one tokenizer): tokenised once
    assert _cached(tokenizer, split, tmp_path) == _tokenised(tokenizer.tokenizer, split) and tokenizer.calls == 2


def test_the_key_follows_tokenizer_data_and_settings(tiny_gpt2):
    tokenizer = loading.load_tokenizer(tiny_gpt2)
    uri = lambda tok=tokenizer, fp="f1", length=128, task="causal": tokencache.cache_uri(tok, fp, length, task, "root")  # noqa: E731
    assert uri() == uri(loading.load_tokenizer(tiny_gpt2))  # same files, another object
    assert uri().startswith(storage.join("root", "tokens", "")) and uri().endswith(".npz")
    others = [
        uri(fp="f2"),
        uri(length=256),
        uri(task="seq2seq"),
        uri(eos_appending(loading.load_tokenizer(tiny_gpt2))),
        uri(tiny.build_tokenizer(vocab_size=512)),
    ]
    assert len({uri(), *others}) == 1 + len(others)


def test_tokenizer_fingerprint_is_the_same_in_another_process(tiny_gpt2):
    here = tokencache.tokenizer_fingerprint(loading.load_tokenizer(tiny_gpt2))
    code = (
        "import sys; from pathlib import Path; "
        "from barbarossa.data import tokencache; from barbarossa.engine import loading; "
        "print(tokencache.tokenizer_fingerprint(loading.load_tokenizer(Path(sys.argv[1]))))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code, str(tiny_gpt2)], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert there.stdout.strip() == here


def test_file_format_round_trip_with_wide_ids():
    examples = [{"input_ids": [1, 70_000, 5], "labels": [-100, 70_000, 5]}, {"input_ids": [3], "labels": [3]}]
    assert tokencache.decode(tokencache.encode(examples, 4, "causal")) == (examples, 4)
    seq2seq = [{"input_ids": [7, 8, 9], "labels": [1, 2]}, {"input_ids": [4], "labels": [65_535, 65_536]}]
    assert tokencache.decode(tokencache.encode(seq2seq, 0, "seq2seq")) == (seq2seq, 0)
    assert tokencache.decode(tokencache.encode([], 3, "causal")) == ([], 3)


@pytest.mark.server
def test_cache_on_s3(tiny_gpt2, monkeypatch):
    with moto_s3(monkeypatch) as bucket:
        split = instructions.prepare(str(instructions.BUNDLED), None, f"{bucket}/runs/1")
        tokenizer = CountingTokenizer(loading.load_tokenizer(tiny_gpt2))
        uri = tokencache.warm(
            tokenizer, split["train_uri"], split["train_fingerprint"], 128, "causal", f"{bucket}/cache"
        )
        assert uri.startswith(f"{bucket}/cache/tokens/") and storage.exists(uri) and tokenizer.calls == 2
        assert _cached(tokenizer, split, f"{bucket}/cache") == _tokenised(tokenizer.tokenizer, split)
        assert tokenizer.calls == 2
