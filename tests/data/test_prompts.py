import pytest
from conftest import CountingTokenizer, eos_appending

from barbarossa.data import prompts
from barbarossa.engine import loading


def test_prompt_without_input():
    assert prompts.render_prompt("Bakı haqqında yazın.") == (
        f"{prompts.template_of(None).preamble}\n\n### Təlimat:\nBakı haqqında yazın.\n\n### Cavab:\n"
    )


def test_prompt_with_input():
    assert prompts.render_prompt("Tərcümə edin.", "Good morning") == (
        f"{prompts.template_of(None).preamble_with_input}\n\n"
        "### Təlimat:\nTərcümə edin.\n\n### Giriş:\nGood morning\n\n### Cavab:\n"
    )


def test_labels_mask_exactly_the_prompt(tiny_llama):
    tokenizer = loading.load_tokenizer(tiny_llama)
    record = {"instruction": "Paytaxt hansıdır?", "input": "Azərbaycan", "output": "Bakı şəhəri."}
    example = prompts.build_example(tokenizer, record, max_length=512)
    prompt_ids = prompts.encode_prompt(tokenizer, record)
    n = len(prompt_ids)
    assert example["input_ids"][:n] == prompt_ids
    assert example["labels"][:n] == [prompts.IGNORE_INDEX] * n
    trained = example["labels"][n:]
    assert trained == example["input_ids"][n:] and trained[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(trained[:-1]) == "Bakı şəhəri."
    shown = prompts.show_masking(tokenizer, example)
    assert shown.startswith("«") and shown.endswith("»Bakı şəhəri." + tokenizer.eos_token)
    assert "### Cavab:\n»" in shown


def test_long_response_is_cut_and_prompt_only_examples_dropped(tiny_llama):
    tokenizer = loading.load_tokenizer(tiny_llama)
    record = {"instruction": "Yazın.", "input": "", "output": "söz " * 200}
    prompt_len = len(prompts.encode_prompt(tokenizer, record))
    example = prompts.build_example(tokenizer, record, max_length=prompt_len + 10)
    assert len(example["input_ids"]) == prompt_len + 10
    assert sum(label != prompts.IGNORE_INDEX for label in example["labels"]) == 10
    assert prompts.build_example(tokenizer, record, max_length=prompt_len + 3) is None


def test_masking_examples_mark_the_prompt_for_both_tasks(tiny_llama):
    from barbarossa.data import instructions

    tokenizer = loading.load_tokenizer(tiny_llama)
    records = instructions.load(str(instructions.BUNDLED)).records[:5]
    shown = prompts.masking_examples(tokenizer, records, 256, count=2)
    assert len(shown) == 2 and all(text.startswith("«") and "»" in text for text in shown)
    masked, answer = shown[0][1:].split("»", 1)
    assert masked.rstrip().endswith(prompts.template_of(None).response_header) and records[0]["output"][:20] in answer
    t5 = loading.load_tokenizer(loading.resolve("tiny:t5"))
    [text] = prompts.masking_examples(t5, records, 256, count=1, task="seq2seq")
    assert (
        prompts.template_of(None).response_header in text.split("»")[0]
        and records[0]["output"][:20] in text.split("»")[1]
    )


# ---------------------------------------------------------------- batched tokenisation


def _per_row(tokenizer, records, max_length, task):
    return [prompts.build_example(tokenizer, r, max_length, task=task) for r in records]


def _assert_batched_equals_per_row(tokenizer, records, max_length, task):
    counting = CountingTokenizer(tokenizer)
    batched = prompts.build_examples(counting, records, max_length, task=task)
    assert batched == _per_row(tokenizer, records, max_length, task)
    assert counting.calls == 2 * -(-len(records) // prompts.BATCH_ROWS)
    return batched


@pytest.mark.parametrize("source", ["tiny:gpt2", "tiny:t5"])
@pytest.mark.parametrize("task", ["causal", "seq2seq"])
def test_build_examples_equals_build_example_row_for_row(source, task):
    from barbarossa.data import instructions

    tokenizer = loading.load_tokenizer(loading.resolve(source))
    records = instructions.load(str(instructions.BUNDLED)).records
    short = _assert_batched_equals_per_row(tokenizer, records, 96, task)
    assert 0 < short.count(None) < len(records)  # some rows dropped as too long, some kept
    kept = [e for e in short if e is not None]
    assert any(e["labels"][-1] != tokenizer.eos_token_id for e in kept)  # responses cut at max_length
    assert None not in _assert_batched_equals_per_row(tokenizer, records, 1024, task)


@pytest.mark.parametrize("task", ["causal", "seq2seq"])
def test_build_examples_with_a_tokenizer_that_appends_eos_to_the_prompt(tiny_gpt2, task):
    from barbarossa.data import instructions

    tokenizer = eos_appending(loading.load_tokenizer(tiny_gpt2))
    records = instructions.load(str(instructions.BUNDLED)).records[:60]
    examples = _assert_batched_equals_per_row(tokenizer, records, 256, task)
    prompt_end = examples[0]["input_ids"][len(prompts.encode_prompt(tokenizer, records[0], task)) - 1]
    assert (prompt_end == tokenizer.eos_token_id) == (task == "seq2seq")  # a decoder-only model continues the prompt


def test_build_examples_in_several_tokenizer_batches(tiny_gpt2, monkeypatch):
    from barbarossa.data import instructions

    monkeypatch.setattr(prompts, "BATCH_ROWS", 50)
    tokenizer = loading.load_tokenizer(tiny_gpt2)
    records = instructions.load(str(instructions.BUNDLED)).records[:175]
    _assert_batched_equals_per_row(tokenizer, records, 128, "causal")  # 4 batches, the last one short
    assert prompts.build_examples(tokenizer, [], 128) == []


def test_build_examples_with_the_smollm2_tokenizer():
    """The real roster tokenizer (byte-level BPE, its own special tokens): ~20 s the first time it is converted."""
    from barbarossa.data import instructions
    from barbarossa.models import roster

    tokenizer = loading.load_tokenizer(loading.resolve(roster.all_rosters()["local"].candidates[0].base.source))
    records = instructions.load(str(instructions.BUNDLED)).records
    short = _assert_batched_equals_per_row(tokenizer, records, 128, "causal")
    assert 0 < short.count(None) < len(records)
    assert None not in _assert_batched_equals_per_row(tokenizer, records, 1024, "causal")


def test_a_language_packs_template_reaches_the_examples_and_their_masking(tiny_llama):
    from barbarossa import languages

    tokenizer = loading.load_tokenizer(tiny_llama)
    kazakh = languages.load("kk")
    record = {"instruction": "Астана туралы жазыңыз.", "input": "", "output": "Астана — Қазақстанның астанасы."}
    example = prompts.build_example(tokenizer, record, 512, template=kazakh)
    [batched] = prompts.build_examples(tokenizer, [record], 512, template=kazakh)
    assert example == batched and tokenizer.decode(example["input_ids"]).startswith(kazakh["template"]["preamble"])
    [shown] = prompts.masking_examples(tokenizer, [record], 512, count=1, template=kazakh)
    assert "### Нұсқаулық:" in shown and "### Жауап:" in shown.split("»")[0]
    assert example != prompts.build_example(tokenizer, record, 512)  # the default (az) template differs
