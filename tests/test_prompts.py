from barbarossa import models, prompts


def test_prompt_without_input():
    assert prompts.render_prompt("Bakı haqqında yazın.") == (
        f"{prompts.PREAMBLE}\n\n### Təlimat:\nBakı haqqında yazın.\n\n### Cavab:\n"
    )


def test_prompt_with_input():
    assert prompts.render_prompt("Tərcümə edin.", "Good morning") == (
        f"{prompts.PREAMBLE_WITH_INPUT}\n\n### Təlimat:\nTərcümə edin.\n\n### Giriş:\nGood morning\n\n### Cavab:\n"
    )


def test_labels_mask_exactly_the_prompt(tiny_llama):
    tokenizer = models.load_tokenizer(tiny_llama)
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
    tokenizer = models.load_tokenizer(tiny_llama)
    record = {"instruction": "Yazın.", "input": "", "output": "söz " * 200}
    prompt_len = len(prompts.encode_prompt(tokenizer, record))
    example = prompts.build_example(tokenizer, record, max_length=prompt_len + 10)
    assert len(example["input_ids"]) == prompt_len + 10
    assert sum(label != prompts.IGNORE_INDEX for label in example["labels"]) == 10
    assert prompts.build_example(tokenizer, record, max_length=prompt_len + 3) is None


def test_masking_examples_mark_the_prompt_for_both_tasks(tiny_llama):
    from barbarossa import data

    tokenizer = models.load_tokenizer(tiny_llama)
    records = data.load(str(data.BUNDLED)).records[:5]
    shown = prompts.masking_examples(tokenizer, records, 256, count=2)
    assert len(shown) == 2 and all(text.startswith("«") and "»" in text for text in shown)
    masked, answer = shown[0][1:].split("»", 1)
    assert masked.rstrip().endswith(prompts.RESPONSE_HEADER) and records[0]["output"][:20] in answer
    t5 = models.load_tokenizer(models.resolve("tiny:t5"))
    [text] = prompts.masking_examples(t5, records, 256, count=1, task="seq2seq")
    assert prompts.RESPONSE_HEADER in text.split("»")[0] and records[0]["output"][:20] in text.split("»")[1]
