"""The request the teacher continues, per pack, and its answer read back: good blocks, malformed ones, a cut one;
the requests a run sends, the same every time."""

import pytest

from barbarossa import languages
from barbarossa.selfinstruct import plan, prompt
from barbarossa.selfinstruct.settings import SelfInstruct

SEEDS = [
    {"instruction": "Azərbaycanın paytaxtı hansı şəhərdir?", "input": "", "output": "Bakı."},
    {"instruction": "Bu cümləni düzəldin.", "input": "mən gedir", "output": "Mən gedirəm."},
]


@pytest.mark.parametrize("code", languages.known())
def test_the_prompt_numbers_the_seeds_and_opens_the_next_task(code):
    pack = languages.load(code)
    opening, *blocks = prompt.build_prompt(pack, SEEDS, 20).split("\n###\n")
    assert "{tasks}" not in opening and "20 " in opening and pack["name"] in opening  # in the pack's language
    assert blocks == [
        "1. Instruction: Azərbaycanın paytaxtı hansı şəhərdir?\n1. Input:\n<noinput>\n1. Output:\nBakı.",
        "2. Instruction: Bu cümləni düzəldin.\n2. Input:\nmən gedir\n2. Output:\nMən gedirəm.",
        "3. Instruction:",
    ]
    assert prompt.stop_strings(20)[0] == "21. Instruction"


def test_a_pack_without_a_prompt_is_refused(tmp_path):
    pack = dict(languages.load("az"), selfinstruct={"prompt": "", "blacklist": [], "blacklist_words": []})
    with pytest.raises(languages.LanguageError, match="no \\[selfinstruct\\] prompt"):
        prompt.build_prompt(pack, SEEDS, 20)


def test_a_pack_prompt_must_say_how_many_tasks(tmp_path):
    path = tmp_path / "az.toml"
    text = (languages.languages_dir() / "az.toml").read_text(encoding="utf-8")
    path.write_text(text.replace("{tasks}", "twenty"), encoding="utf-8")
    with pytest.raises(languages.LanguageError, match=r"\[selfinstruct\] prompt must say how many tasks"):
        languages.load(str(path))


RESPONSE = """ Xəzər dənizinin ən dərin yeri haradadır?
3. Input:
<noinput>
3. Output:
Cənub hissəsində, təxminən 1025 metr.
###
4 . instruction :   Verilmiş sözün sinonimini yazın.
4. Input: sevinc
4. Output: şadlıq
###
5. Instruction: Giriş olmadan cavab verin.
5. Output: Bəli.
###
Here are more tasks!
###
7. Output: a
7. Instruction: b
###
8. Instruction: Yarımçıq tapşırıq
8. Input:"""


def test_a_response_comes_back_block_by_block_with_its_request_and_position():
    found = prompt.parse_response(RESPONSE, 3, "length", request=7)
    assert [(c.request, c.position, c.rule) for c in found] == [
        (7, 0, ""),
        (7, 1, ""),
        (7, 2, ""),
        (7, 3, "format"),
        (7, 4, "format"),
        (7, 5, "truncated"),
    ]
    assert found[0].row == {
        "instruction": "Xəzər dənizinin ən dərin yeri haradadır?",
        "input": "",
        "output": "Cənub hissəsində, təxminən 1025 metr.",
    }
    assert found[1].row == {"instruction": "Verilmiş sözün sinonimini yazın.", "input": "sevinc", "output": "şadlıq"}
    assert found[2].input == "" and found[2].output == "Bəli."
    assert found[3].raw == "Here are more tasks!" and found[5].raw.startswith("8. Instruction: Yarımçıq")
    assert found[0].raw.startswith("3. Instruction: Xəzər")


def test_only_a_response_cut_by_the_token_limit_loses_its_last_block():
    complete = prompt.parse_response(RESPONSE, 3, "stop")
    assert complete[-1].rule == "format"  # no Output label: malformed, not cut
    ended = prompt.parse_response(RESPONSE.rsplit("###", 1)[0] + "###\n", 3, "length")
    assert [c.rule for c in ended] == ["", "", "", "format", "format"]


@pytest.mark.parametrize("opening", ["", "3. Instruction:", "###\n3. Instruction:", "\n 3. Instruction:"])
def test_a_response_that_opens_the_task_again_parses_the_same(opening):
    found = prompt.parse_response(opening + RESPONSE, 3, "length")
    assert [c.rule for c in found] == ["", "", "", "format", "format", "truncated"]
    assert found[0].instruction == "Xəzər dənizinin ən dərin yeri haradadır?"


def test_rejected_rows_keep_rule_detail_and_where_first():
    block = prompt.parse_response(" a\n3. Output: b", 3, "stop", request=2)[0]
    row = block.rejected("length", "1 words")
    assert (
        list(row)[:4] == ["rule", "detail", "request", "position"] and row["raw"] == "3. Instruction: a\n3. Output: b"
    )


def test_requests_are_the_same_every_time_and_differ_from_each_other():
    settings = SelfInstruct(seed=5)
    first = plan.plan_requests(30, settings, 0, 8)
    assert first == plan.plan_requests(30, settings, 0, 8)
    assert plan.plan_requests(30, settings, 4, 4) == first[4:]  # a resumed run asks the same requests
    assert all(len(set(r.seeds)) == 3 and max(r.seeds) < 30 for r in first)
    assert len({r.seeds for r in first}) > 1
    assert plan.plan_requests(30, SelfInstruct(seed=6), 0, 8) != first
    assert plan.plan_requests(2, settings, 0, 1)[0].seeds in ((0, 1), (1, 0))  # fewer seeds than asked: all


def test_waves_are_sized_by_the_keep_rate_within_the_budget():
    settings = SelfInstruct(target=100, request_budget=50, expected_keep_rate=0.5)
    assert plan.wave_size(settings, kept=0, requested=0) == 12  # 100 / (17 new per request × 0.5)
    assert plan.wave_size(settings, kept=30, requested=10) == 24  # 70 more at 3 a request
    assert plan.wave_size(settings, kept=10, requested=45) == 5  # the budget's last 5
    assert plan.wave_size(settings, kept=100, requested=12) == 0
    groups = plan.in_groups(plan.plan_requests(10, settings, 0, 10), 4)
    assert [len(g) for g in groups] == [4, 4, 2] and groups[2][1].index == 9
