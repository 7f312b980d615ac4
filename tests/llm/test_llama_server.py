"""The endpoint contract on a real server: llama.cpp's (the xllamacpp wheel) over SmolLM2-135M, one thread.

Chat, completions, stop strings, top log-probabilities and a length cut-off, as the teacher's client reads them;
the server started and stopped once for the module, and `barbarossa serve` printing what to point a teacher at.
"""

import pytest

from barbarossa import cli, llm

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def smollm2():
    with llm.serve(threads=1, ctx=2048) as server:
        yield server


@pytest.fixture
def client(smollm2):
    settings = llm.Teacher(endpoint=smollm2.url, model=smollm2.model, timeout_s=60.0)
    with llm.connect(settings) as teacher:
        yield teacher


def test_the_server_lists_its_model_and_passes_check(smollm2):
    assert smollm2.url.startswith("http://127.0.0.1:") and smollm2.url.endswith("/v1")
    assert smollm2.model == "SmolLM2-135M-Instruct.Q4_1"
    llm.check(llm.Teacher(endpoint=smollm2.url, model=smollm2.model))
    with pytest.raises(llm.EndpointError, match="it serves: SmolLM2-135M-Instruct.Q4_1"):
        llm.check(llm.Teacher(endpoint=smollm2.url, model="gpt-4o"))


def test_completions_and_chat_answer(client):
    completed = client.complete("The capital of France is", max_tokens=6, temperature=0.0)
    assert "Paris" in completed.text and completed.prompt_tokens > 0 and 0 < completed.completion_tokens <= 6
    chatted = client.chat([{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0)
    assert chatted.text.strip() and chatted.finish_reason in ("stop", "length") and chatted.prompt_tokens > 5


def test_stop_strings_and_the_length_cut_off(client):
    stopped = client.complete("Count: 1, 2, 3,", max_tokens=16, temperature=0.0, stop=[","])
    assert stopped.finish_reason == "stop" and "," not in stopped.text and stopped.text.strip()
    cut = client.complete("Count: 1, 2, 3,", max_tokens=2, temperature=0.0)
    assert cut.finish_reason == "length" and cut.completion_tokens == 2


def test_top_logprobs_come_back_per_generated_token(client):
    for answer in (
        client.complete("The capital of France is", max_tokens=3, temperature=0.0, logprobs=2),
        client.chat([{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0.0, logprobs=2),
    ):
        assert len(answer.top_logprobs) == answer.completion_tokens
        assert all(1 <= len(top) <= 2 and all(v <= 0 for v in top.values()) for top in answer.top_logprobs)


def test_barbarossa_serve_prints_the_teacher_keys_and_stops_on_ctrl_c(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "wait_for_ctrl_c", interrupted)
    assert cli.main(["serve", "--port", "0"]) == 0
    printed = capsys.readouterr().out
    assert 'endpoint = "http://127.0.0.1:' in printed and 'model = "SmolLM2-135M-Instruct.Q4_1"' in printed
    url = printed.split('endpoint = "')[1].split('"')[0]
    with pytest.raises(llm.EndpointError, match="unreachable"):  # stopped with the command
        llm.check(llm.Teacher(endpoint=url, model="SmolLM2-135M-Instruct.Q4_1"))
