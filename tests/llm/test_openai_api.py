"""The teacher's HTTP client against a scripted OpenAI-compatible server: parsing, retries, the context-length
retry, the API key kept out of everything stored, the content cache, and `check`'s one-line errors."""

import email.utils
import socket
import time

import pytest
from conftest import moto_s3
from scripted_llm import Reply, ScriptedServer, chat_body, completion_body

from barbarossa import llm
from barbarossa.llm import openai_api, responses

TOPS = [{"Salam": -0.1, "Hello": -2.5}, {"!": -0.3, ".": -1.4}]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(openai_api, "BACKOFF_S", 0.01)


def teacher(server, **changes) -> llm.Teacher:
    return llm.Teacher(endpoint=server.url, model=server.models[0], **changes)


def test_completions_and_chat_read_text_finish_reason_usage_and_top_logprobs(scripted_llm):
    scripted_llm.queue(
        Reply(body=completion_body("Salam!", "length", prompt_tokens=7, completion_tokens=2, logprobs=TOPS)),
        Reply(body=chat_body("Salam!", "stop", prompt_tokens=9, completion_tokens=2, logprobs=TOPS)),
    )
    with llm.connect(teacher(scripted_llm)) as client:
        completed = client.complete("Say hello", max_tokens=5, temperature=0.0, stop=["\n"], logprobs=2, seed=3)
        chatted = client.chat([{"role": "user", "content": "Say hello"}], max_tokens=5, logprobs=2)
    assert completed == llm.Completion("Salam!", "length", 7, 2, TOPS)
    assert chatted == llm.Completion("Salam!", "stop", 9, 2, TOPS)
    sent_completion, sent_chat = (r.body for r in scripted_llm.requests)
    assert scripted_llm.requests[0].path == "/v1/completions"
    assert sent_completion == {
        "model": "scripted-model",
        "prompt": "Say hello",
        "max_tokens": 5,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": ["\n"],
        "logprobs": 2,
        "seed": 3,
    }
    assert scripted_llm.requests[1].path == "/v1/chat/completions"
    assert sent_chat["logprobs"] is True and sent_chat["top_logprobs"] == 2 and sent_chat["max_tokens"] == 5
    assert client.usage == {"requests": 2, "cached": 0, "retries": 0, "prompt_tokens": 16, "completion_tokens": 4}


def test_llama_cpp_logprob_shapes_and_missing_ones_are_read():
    """llama.cpp answers /v1/completions in the chat shape (with ids and bytes), its native endpoint with
    probabilities; a server that sends none gives None."""
    llama_cpp = {
        "choices": [
            {
                "text": " Paris",
                "finish_reason": "length",
                "logprobs": {
                    "content": [
                        {
                            "id": 7042,
                            "token": " Paris",
                            "bytes": [32, 80],
                            "logprob": -0.25,
                            "top_logprobs": [
                                {"id": 7042, "token": " Paris", "bytes": [32], "logprob": -0.25},
                                {"id": 260, "token": " the", "bytes": [32], "logprob": -2.75},
                            ],
                        }
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1},
    }
    assert responses.parse("completions", llama_cpp).top_logprobs == [{" Paris": -0.25, " the": -2.75}]
    native = {"content": "x", "completion_probabilities": [{"content": "x", "probs": [{"tok_str": "x", "prob": 1.0}]}]}
    assert responses.parse("completions", native).top_logprobs == [{"x": 0.0}]
    bare = responses.parse("chat", {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
    assert bare == llm.Completion("hi", "stop", 0, 0, None)


def test_429_500_and_a_timeout_are_retried_and_every_answer_comes_back_in_order(scripted_llm):
    scripted_llm.queue(
        Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
        Reply(500, {"error": {"message": "boom"}}),
        Reply(body=completion_body("too late"), delay_s=3.0),  # past timeout_s: the client gives up and asks again
    )
    prompts = [f"prompt {i}" for i in range(6)]
    with llm.connect(teacher(scripted_llm, timeout_s=1.0, max_retries=3, concurrency=4)) as client:
        answers = client.complete_many(prompts, max_tokens=4)
    assert [a.text for a in answers] == [f"echo: {p}" for p in prompts]
    assert len(scripted_llm.posts()) == 9
    assert client.usage["requests"] == 9 and client.usage["retries"] == 3


def test_retry_after_is_waited_for_and_spent_retries_fail_in_one_line(scripted_llm):
    scripted_llm.queue(Reply(429, headers={"Retry-After": "1"}))
    started = time.monotonic()
    with llm.connect(teacher(scripted_llm)) as client:
        assert client.complete("hi").text == "echo: hi"
    assert time.monotonic() - started >= 1.0
    scripted_llm.queue(Reply(503), Reply(503))
    with llm.connect(teacher(scripted_llm, max_retries=1)) as client, pytest.raises(llm.EndpointError) as refused:
        client.complete("hi")
    assert "gave up after 1 retries (HTTP 503" in str(refused.value) and "\n" not in str(refused.value)


def test_backoff_doubles_with_jitter_and_honours_what_the_server_asks(monkeypatch):
    monkeypatch.setattr(openai_api, "BACKOFF_S", 0.5)
    assert 0.5 <= openai_api.backoff(1) <= 0.625 and 2.0 <= openai_api.backoff(3) <= 2.5
    assert openai_api.backoff(2, asked=7.0) == 7.0 and openai_api.backoff(30) == openai_api.MAX_WAIT_S
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    response = openai_api.httpx2.Response(429, headers={"Retry-After": later})
    assert 25 < openai_api.retry_after(response) <= 30


def test_a_context_length_400_is_asked_again_once_with_half_the_max_tokens(scripted_llm):
    too_long = {"error": {"message": "This model's maximum context length is 2048 tokens. However, you requested"}}
    scripted_llm.queue(Reply(400, too_long))
    with llm.connect(teacher(scripted_llm)) as client:
        assert client.complete("hi", max_tokens=1000).text == "echo: hi"
        assert [r.body["max_tokens"] for r in scripted_llm.posts()] == [1000, 500]
        scripted_llm.queue(Reply(400, too_long), Reply(400, too_long))
        with pytest.raises(llm.EndpointError, match="exceeds|context length"):
            client.complete("again", max_tokens=1000)
        scripted_llm.queue(Reply(400, {"error": {"message": "unknown field 'x'"}}))
        with pytest.raises(llm.EndpointError, match="refused the request: HTTP 400: unknown field"):
            client.complete("bad")
    assert len(scripted_llm.posts()) == 2 + 2 + 1


def test_the_api_key_goes_in_the_header_only(scripted_llm, monkeypatch, tmp_path):
    secret = "sk-test-0123456789"
    monkeypatch.setenv("TEACHER_KEY", secret)
    settings = teacher(scripted_llm, api_key_env="TEACHER_KEY", max_retries=0)
    with llm.connect(settings, cache_dir=tmp_path) as client:
        client.complete("hi")
        client.chat([{"role": "user", "content": "hi"}])
        scripted_llm.queue(Reply(401, {"error": {"message": "invalid key"}}), Reply(500))
        errors = []
        for prompt in ("refused", "failing"):
            with pytest.raises(llm.EndpointError) as refused:
                client.complete(prompt)
            errors.append(str(refused.value))
    assert all(r.headers["Authorization"] == f"Bearer {secret}" for r in scripted_llm.requests)
    assert all(secret not in str(r.body) for r in scripted_llm.requests)
    stored = [path.read_text() for path in tmp_path.rglob("*") if path.is_file()]
    assert len(stored) == 2 and not any(secret in text for text in stored)
    assert errors and not any(secret in error for error in errors)
    monkeypatch.setenv("TEACHER_KEY", "sk-another-key")  # a new key asks nothing again: it is not in the cache key
    with llm.connect(settings, cache_dir=tmp_path) as client:
        assert client.complete("hi").cached


def test_a_cached_rerun_makes_no_request(scripted_llm, tmp_path):
    prompts = ["one", "two", "three"]
    settings = teacher(scripted_llm)
    with llm.connect(settings, cache_dir=tmp_path) as client:
        first = client.complete_many(prompts, max_tokens=8, temperature=0.7, seed=1)
    asked = len(scripted_llm.requests)
    with llm.connect(settings, cache_dir=tmp_path) as client:
        again = client.complete_many(prompts, max_tokens=8, temperature=0.7, seed=1)
        assert len(scripted_llm.requests) == asked == 3
        assert client.usage == {"requests": 0, "cached": 3, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        assert [a.text for a in again] == [f.text for f in first] and all(a.cached for a in again)
        assert not any(f.cached for f in first)
        assert not client.complete("one", max_tokens=8, temperature=0.2, seed=1).cached  # another question
    with llm.connect(settings.replace(cache=False), cache_dir=tmp_path) as client:
        assert not client.complete("one", max_tokens=8, temperature=0.7, seed=1).cached
    with ScriptedServer() as restarted, llm.connect(teacher(restarted), cache_dir=tmp_path) as client:
        assert client.complete("two", max_tokens=8, temperature=0.7, seed=1).cached  # a local server's new port
        assert not restarted.requests
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.server
def test_the_cache_may_be_an_s3_prefix_so_a_cluster_run_is_cached_too(scripted_llm, monkeypatch):
    settings = teacher(scripted_llm)
    with moto_s3(monkeypatch) as bucket:
        cache = f"{bucket}/runs/cache/llm"
        with llm.connect(settings, cache_dir=cache) as client:
            first = client.complete_many(["one", "two"], max_tokens=8, temperature=0.7, seed=1)
        with llm.connect(settings, cache_dir=cache) as client:
            again = client.complete_many(["one", "two"], max_tokens=8, temperature=0.7, seed=1)
            assert client.usage["requests"] == 0 and client.usage["cached"] == 2
        assert [a.text for a in again] == [f.text for f in first] and len(scripted_llm.requests) == 2
        assert llm.ResponseCache(cache).get("ab" * 32) is None  # a miss, not an error


def test_a_cache_write_that_fails_leaves_no_entry_and_no_temporary_file(tmp_path):
    cache = llm.ResponseCache(tmp_path)
    unwritable = llm.Completion("x", "stop", 1, 1, [{"x": object()}])  # json.dump fails half-way
    with pytest.raises(TypeError):
        cache.put("ab" * 32, {"prompt": "x"}, unwritable)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [] and cache.get("ab" * 32) is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_says_in_one_line_what_is_wrong(scripted_llm, monkeypatch):
    llm.check(teacher(scripted_llm))
    unreachable = llm.Teacher(endpoint=f"http://127.0.0.1:{_closed_port()}/v1", model="m")
    with pytest.raises(llm.EndpointError, match="unreachable .*barbarossa serve"):
        llm.check(unreachable)
    monkeypatch.delenv("NO_SUCH_TEACHER_KEY", raising=False)
    with pytest.raises(llm.EndpointError, match=r"api_key_env names \$NO_SUCH_TEACHER_KEY, which is not set"):
        llm.check(teacher(scripted_llm, api_key_env="NO_SUCH_TEACHER_KEY"))
    scripted_llm.models.append("other-model")
    with pytest.raises(llm.EndpointError, match="'gpt-9' is unknown .* it serves: scripted-model, other-model"):
        llm.check(llm.Teacher(endpoint=scripted_llm.url, model="gpt-9"))


def test_teacher_settings_are_checked_naming_file_table_and_key():
    with pytest.raises(llm.EndpointError, match=r"teacher.toml: \[teacher\] endpoint must be a base URL ending in /v1"):
        llm.Teacher.from_table({"model": "m", "endpoint": "http://x:1"}, "teacher.toml")
    with pytest.raises(llm.EndpointError, match="missing key 'model'"):
        llm.Teacher.from_table({}, "teacher.toml")
    with pytest.raises(llm.EndpointError, match="backend must be one of"):
        llm.Teacher.from_table({"model": "m", "backend": "vllm"}, "teacher.toml")
    local = llm.Teacher.from_table({"model": "tiny:llama", "backend": "transformers", "endpoint": ""}, "t.toml")
    assert local.max_tokens == 3072 and local.concurrency == 4
