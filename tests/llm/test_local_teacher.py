"""The transformers backend on a tiny random model: batched answers in order, stop strings cut, seeded sampling,
the cache, and a source that does not resolve."""

import pytest

from barbarossa import llm
from barbarossa.engine import loading

LOCAL = llm.Teacher(backend="transformers", model="tiny:llama", endpoint="")


@pytest.fixture(scope="module")
def client():
    with llm.connect(LOCAL) as local:
        yield local


def test_complete_many_answers_in_the_order_asked(client, tiny_llama):
    tokenizer = loading.load_tokenizer(tiny_llama)
    prompts = ["a b c d e f g h", "a", "a b c", "a b c d e"]  # decoded shortest first, in one batch
    answers = client.complete_many(prompts, max_tokens=5, temperature=0.0)
    assert [a.prompt_tokens for a in answers] == [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert all(a.completion_tokens <= 5 and a.top_logprobs is None for a in answers)  # none asked for
    assert all(a.finish_reason == "length" for a in answers if a.completion_tokens == 5 and a.text)
    assert answers[1] == client.complete("a", max_tokens=5, temperature=0.0)  # greedy: the same answer alone


def test_stop_strings_cut_the_text(client):
    full = client.complete("a b c", max_tokens=12, temperature=0.0)
    stop = next(
        full.text[i : i + 2] for i in range(len(full.text) // 2, len(full.text)) if full.text[i : i + 2].strip()
    )
    cut = client.complete("a b c", max_tokens=12, temperature=0.0, stop=[stop])
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"


def test_sampling_follows_the_seed_and_logprobs_cover_each_generated_token(client):
    first, again = (client.complete("a b", max_tokens=8, temperature=1.0, seed=7, logprobs=3) for _ in range(2))
    assert first.text == again.text
    assert len(first.top_logprobs) == first.completion_tokens
    assert all(1 <= len(top) <= 3 and all(v <= 0 for v in top.values()) for top in first.top_logprobs)


def test_local_answers_are_cached_and_a_bad_source_is_one_line(tmp_path):
    with llm.connect(LOCAL, cache_dir=tmp_path) as local:
        asked = local.complete("a b", max_tokens=3, temperature=0.0)
    with llm.connect(LOCAL, cache_dir=tmp_path) as local:
        again = local.complete("a b", max_tokens=3, temperature=0.0)
        assert again.cached and again.text == asked.text and local.usage["requests"] == 0
    with pytest.raises(llm.EndpointError, match=r"\[teacher\] model: model source 'no/such/folder'"):
        llm.check(LOCAL.replace(model="no/such/folder"))
