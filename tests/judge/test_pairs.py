"""Pairs judged in both orders by scripted judges (a stdlib OpenAI-compatible server in a thread): position bias
cancels, a consistent preference is counted, nonsense is unparsed and never guessed, log-probabilities are read,
and a rerun over the same answers asks nothing."""

import pytest
from scripted_llm import Reply, chat_body

from barbarossa import judge, languages, llm
from barbarossa.judge.pairs import read_logprobs, read_text

AZ = languages.load("az")
ROWS = [
    {"instruction": f"Sual {i}: Bakı haqqında yazın.", "input": "", "output": f"İstinad cavabı {i}."} for i in range(16)
]
CANDIDATE = [f"Namizədin cavabı nömrə {i}." for i in range(16)]
OTHER = [f"Bazanın cavabı {i}." for i in range(16)]


def settings(server, **keys) -> judge.Judge:
    return judge.Judge(endpoint=server.url, model=server.models[0], **keys)


def shown(body: dict, answers: list[str]) -> tuple[str, str]:
    """The two answers of `answers` a judge prompt shows, in the order shown (A first)."""
    prompt = body["messages"][-1]["content"]
    found = sorted((prompt.index(a), a) for a in answers if a in prompt)
    assert len(found) == 2, "the prompt shows both answers"
    return found[0][1], found[1][1]


def scripted(server, prefer, answers: list[str]) -> None:
    """The server's judge: `prefer(a, b)` says "A", "B" or "C" for the answers shown first and second."""

    def answer(path, body):
        return Reply(body=chat_body(f"[[{prefer(*shown(body, answers))}]]"))

    server.answer = answer


def run(server, tmp_path, candidate=CANDIDATE, other=OTHER, **keys) -> judge.Judgement:
    config = settings(server, **keys)
    with llm.connect(judge.teacher(config), tmp_path / "cache") as client:
        return judge.judge_pairs(client, AZ, ROWS, candidate, other, config)


def test_a_judge_preferring_the_first_answer_ties_every_pair(scripted_llm, tmp_path):
    scripted(scripted_llm, lambda a, b: "A", CANDIDATE + OTHER)
    judgement = run(scripted_llm, tmp_path)
    fields = judge.row_fields(settings(scripted_llm), judgement)
    assert fields["judge.win_rate_vs_base"] == 0.5 and fields["judge.lc_win_rate_vs_base"] == 0.5
    assert fields["judge.pairs"] == 16 and fields["judge.ties"] == 16 and fields["judge.unparsed"] == 0
    assert fields["judge.win_rate_vs_base_p"] == 1.0 and fields["judge.win_rate_vs_base_ci"] == [0.5, 0.5]
    assert fields["judge.calls"] == 32 and len(scripted_llm.posts()) == 32  # both orders of every pair
    assert fields["judge.win_rate_vs_release"] is None and fields["judge.model"] == "scripted-model"


def test_a_judge_preferring_the_candidate_gives_one(scripted_llm, tmp_path):
    scripted(scripted_llm, lambda a, b: "A" if a in CANDIDATE else "B", CANDIDATE + OTHER)
    fields = judge.row_fields(settings(scripted_llm), run(scripted_llm, tmp_path))
    assert fields["judge.win_rate_vs_base"] == 1.0 and fields["judge.ties"] == 0
    assert fields["judge.win_rate_vs_base_ci"] == [1.0, 1.0] and fields["judge.win_rate_vs_base_p"] < 0.01
    assert fields["judge.tokens"] == 32 * 5  # the scripted server's 3 prompt + 2 completion tokens per verdict


def test_a_judge_preferring_longer_answers_is_length_controlled(scripted_llm, tmp_path):
    # the candidate's answer is the longer in 12 of 16 pairs, by 10, 20, ... characters; shorter by as much in 4
    # (a judge led by length alone separates wins from losses: the fit reads zero in the middle of the gap)
    candidate = [f"c{i:02d}" + "ə" * 10 * (i + 1) for i in range(12)] + [f"c{i:02d}" for i in range(12, 16)]
    other = [f"b{i:02d}" for i in range(12)] + [f"b{i:02d}" + "o" * 10 * (i - 11) for i in range(12, 16)]
    scripted(scripted_llm, lambda a, b: "A" if len(a) > len(b) else "B", candidate + other)
    judgement = run(scripted_llm, tmp_path, candidate, other)
    fields = judge.row_fields(settings(scripted_llm), judgement)
    assert fields["judge.win_rate_vs_base"] == 0.75 and fields["judge.ties"] == 0
    assert fields["judge.lc_win_rate_vs_base"] == pytest.approx(0.5, abs=0.1)
    assert fields["judge.length_moved_vs_base"] is True


def test_nonsense_is_unparsed_and_gives_no_rate(scripted_llm, tmp_path):
    scripted_llm.answer = lambda path, body: Reply(body=chat_body("Both answers have merits. [[D]] A or B?"))
    fields = judge.row_fields(settings(scripted_llm), run(scripted_llm, tmp_path))
    assert fields["judge.unparsed"] == 16 and fields["judge.pairs"] == 16 and fields["judge.ties"] == 0
    assert fields["judge.win_rate_vs_base"] is None and fields["judge.lc_win_rate_vs_base"] is None
    assert fields["judge.win_rate_vs_base_ci"] is None and fields["judge.calls"] == 32


def test_one_unreadable_order_leaves_the_pair_unparsed_not_guessed(scripted_llm, tmp_path):
    def answer(path, body):
        a, _ = shown(body, CANDIDATE + OTHER)
        return Reply(body=chat_body("[[A]]" if a in CANDIDATE else "I cannot decide."))

    scripted_llm.answer = answer
    judgement = run(scripted_llm, tmp_path)
    assert judgement.count(None) == 16 and judgement.outcomes() == []


def test_the_logprobs_mode_reads_a_against_b(scripted_llm, tmp_path):
    # the text says B, the label's log-probabilities prefer A: the logprobs mode reads the latter
    tops = [{"[[": -0.01}, {"A": -0.1, "B": -2.3, " A": -5.0}, {"]]": -0.01}]
    scripted_llm.answer = lambda path, body: Reply(body=chat_body("[[B]]", logprobs=tops))
    judgement = run(scripted_llm, tmp_path, mode="logprobs")
    verdict = judgement.pairs[0].candidate_first
    assert verdict.label == "A" and verdict.read_from == "logprobs"
    assert verdict.p_first == pytest.approx((0.9048 + 0.0067) / (0.9048 + 0.0067 + 0.1003), abs=1e-3)
    assert judgement.count("tie") == 16  # A both ways: the position, not the answer
    assert all(post.body["top_logprobs"] == 10 and post.body["max_tokens"] == 16 for post in scripted_llm.posts())
    assert all(post.body["temperature"] == 0.0 for post in scripted_llm.posts())


def test_modes_fall_back_or_not_where_a_server_returns_no_logprobs(scripted_llm, tmp_path):
    scripted_llm.answer = lambda path, body: Reply(body=chat_body("[[A]]"))
    assert run(scripted_llm, tmp_path / "auto", mode="auto").pairs[0].candidate_first.read_from == "text"
    assert run(scripted_llm, tmp_path / "strict", mode="logprobs").count(None) == 16
    text = run(scripted_llm, tmp_path / "text", mode="text")
    assert text.count("tie") == 16 and "logprobs" not in scripted_llm.posts()[-1].body


def test_a_rerun_over_the_same_answers_asks_nothing(scripted_llm, tmp_path):
    scripted(scripted_llm, lambda a, b: "A" if a in CANDIDATE else "B", CANDIDATE + OTHER)
    first = run(scripted_llm, tmp_path)
    again = run(scripted_llm, tmp_path)
    assert len(scripted_llm.posts()) == 32 and (again.calls, again.tokens) == (0, 0)
    assert again.outcomes() == first.outcomes() == [1.0] * 16


def test_identical_answers_tie_without_asking_and_prompts_are_capped(scripted_llm, tmp_path):
    scripted(scripted_llm, lambda a, b: "A", CANDIDATE + OTHER)
    judgement = run(scripted_llm, tmp_path, list(CANDIDATE), CANDIDATE[:8] + OTHER[8:], prompts=12)
    assert len(judgement.pairs) == 12 and judgement.count("tie") == 12
    assert [p.candidate_first.read_from for p in judgement.pairs[:8]] == ["identical"] * 8
    assert len(scripted_llm.posts()) == 8  # prompts 8..11, both orders


def test_the_prompt_is_the_packs_and_names_the_language(scripted_llm, tmp_path):
    scripted(scripted_llm, lambda a, b: "A", CANDIDATE + OTHER)
    run(scripted_llm, tmp_path, prompts=1)
    prompts = [post.body["messages"][-1]["content"] for post in scripted_llm.posts()]  # in the order they arrived
    assert {shown(post.body, CANDIDATE + OTHER) for post in scripted_llm.posts()} == {
        (CANDIDATE[0], OTHER[0]),
        (OTHER[0], CANDIDATE[0]),
    }  # both orders
    for prompt in prompts:
        assert "Azerbaijani" in prompt and "[[C]]" in prompt and "İstinad cavabı 0." in prompt and "(none)" in prompt
        assert prompt.startswith(AZ["judge"]["prompt"][:60])
    kazakh = judge.render(languages.load("kk"), {"instruction": "{answer_b}", "input": "x"}, "a {input}", "b")
    assert "Kazakh" in kazakh and "a {input}" in kazakh and "{answer_b}" in kazakh  # filled once, braces kept


def test_misaligned_answers_and_a_pack_without_a_prompt_are_refused(scripted_llm, tmp_path):
    with pytest.raises(judge.JudgeError, match="same prompts"):
        run(scripted_llm, tmp_path, CANDIDATE[:3])
    with pytest.raises(judge.JudgeError, match="no \\[judge\\] prompt"):
        judge.render(AZ | {"judge": {"prompt": ""}}, ROWS[0], "a", "b")


def test_verdicts_read_from_text_and_logprobs():
    assert read_text("A is fluent but wrong; [[A]]... on reflection [[ B ]]").label == "B"
    assert read_text("A").label is None
    assert read_logprobs([{"[[": 0.0}, {"C": -0.05, "A": -3.0}]).label == "C"
    assert read_logprobs([{"Hello": -0.1, "A": -2.0}]) is None  # no step whose likeliest token is a label
