"""Every rule rejects the task crafted to break it, good tasks are kept, and every block ends in one place."""

import pytest

from barbarossa import languages
from barbarossa.selfinstruct import filters, prompt
from barbarossa.selfinstruct.settings import SelfInstruct

AZ = languages.load("az")
SEEDS = [
    {"instruction": "Azərbaycanın paytaxtı hansı şəhərdir?", "input": "", "output": "Bakı şəhəridir."},
    {
        "instruction": "Verilmiş cümlədəki qrammatik səhvi düzəldin.",
        "input": "Mən dünən gedir.",
        "output": "Mən dünən getdim.",
    },
]
HELD_OUT = {
    "flores": [
        {
            "instruction": "Bu cümləni ingilis dilinə tərcümə edin.",
            "input": "Bakı Xəzər dənizinin sahilində yerləşən 2 milyon əhalisi olan böyük bir şəhərdir.",
            "output": "",
        }
    ]
}
GOOD = {"input": "", "output": "Bu, yaxşı bir cavabdır və tapşırığı tam yerinə yetirir."}


def english_if_the(text: str) -> str:
    """A stand-in identifier: English where a text has 'the', else Azerbaijani."""
    return "en" if " the " in f" {text.lower()} " else "az"


def pool(settings=None, language_of=english_if_the) -> filters.Pool:
    return filters.Pool(SEEDS, AZ, settings or SelfInstruct(), HELD_OUT, language_of=language_of)


def task(instruction: str, **fields) -> prompt.Candidate:
    return prompt.Candidate(request=0, position=0, raw=instruction, **({"instruction": instruction} | GOOD | fields))


@pytest.mark.parametrize(
    "rule, candidate",
    [
        ("length", task("Qısa yazın.")),
        ("length", task("Bu mətni " + "çox " * 150 + "uzun yazın.")),
        ("first_char", task("«Vətən» sözünün mənasını izah edin.")),
        ("first_char", task("1) Bakının tarixini qısaca danışın.")),
        ("blacklist", task("Bu şəkli diqqətlə təsvir edin.")),
        ("blacklist", task("ŞƏKİL haqqında bir neçə cümlə yazın.")),
        ("blacklist", task("Aşağıdakı məlumat əsasında qrafik qurun.")),
        ("blacklist", task("Xəritədə Bakını tapın və göstərin.")),
        ("blacklist", task("Please draw a small house for me.")),
        ("blacklist", task("Open the website and go  to the news page.")),
        ("instance", task("Bu sual haqqında fikrinizi bildirin.", output="")),
        ("instance", task("Verilmiş mətni olduğu kimi təkrarlayın.", input="Salam, dünya!", output="Salam, dünya!")),
        ("instance", task("Aşağıdakı siyahını tamamlayın, zəhmət olmasa.", output="Siyahı belədir:")),
        ("instance", task("Aşağıdakı siyahını tamamlayın, zəhmət olmasa.", input="Meyvələr:")),
        ("duplicate", task("verilmiş  cümlədəki qrammatik səhvi DÜZƏLDİN.", input="Mən dünən gedir.")),
        (
            "contaminated",
            task(
                "Bu cümləni ingilis dilinə tərcümə edin.",
                input="Bakı Xəzər dənizinin sahilində yerləşən 3 milyon əhalisi olan böyük bir şəhərdir!",
            ),
        ),
        ("language", task("Write a short story about the sea and a boat.")),
        ("language", task("Dəniz haqqında qısa hekayə yazın.", output="Once upon a time the sea was calm and blue.")),
        ("similar", task("Azərbaycanın paytaxtı hansı şəhərdir, deyin?")),
        ("truncated", prompt.Candidate(0, 3, "4. Instruction: Yarım", rule="truncated", detail="cut")),
        ("format", prompt.Candidate(0, 2, "blah", rule="format", detail="no labels")),
    ],
)
def test_each_rule_rejects_the_task_that_breaks_it(rule, candidate):
    kept = pool()
    assert kept.consider(candidate) == rule
    assert kept.kept == [] and len(kept.rejected) == 1
    row = kept.rejected[0]
    assert row["rule"] == rule and row["detail"] and row["raw"] == candidate.raw
    assert kept.counts()[rule] == 1 and kept.counts()["kept"] == 0


@pytest.mark.parametrize(
    "instruction",
    [
        "Əlavə olaraq bu mətni qısaldın, zəhmət olmasa.",  # Ə is a letter
        "Şeirin əsas mövzusunu iki cümlə ilə izah edin.",
        "İnsan bədənində neçə sümük var?",
        "Mətni qısa şəkildə xülasə edin, zəhmət olmasa.",  # şəkildə (in a way) is no picture
        "Bu məsələni addım-addım həll edin: 12 + 30.",
        "Yay tətili üçün üç məsləhət verin.",
    ],
)
def test_good_tasks_are_kept_and_join_the_pool(instruction):
    kept = pool()
    assert kept.consider(task(instruction)) is None
    assert kept.kept == [{"instruction": instruction, **GOOD}] and kept.rejected == []
    again = task(instruction.replace(".", "!").replace("?", "!"))
    assert kept.consider(again) == "similar"  # a later task is compared with the kept one


def test_a_task_similar_to_a_kept_one_says_which():
    kept = pool()
    assert kept.consider(task("Dünyanın ən uzun çayı hansıdır və harada axır?")) is None
    assert kept.consider(task("Dünyanın ən uzun çayı hansıdır, harada axır?")) == "similar"
    assert kept.rejected[0]["detail"].endswith("with task 0")


def test_short_fields_are_not_judged_for_language():
    kept = pool(language_of=lambda text: "en")
    assert kept.consider(task("Bu sözü ingilis dilinə çevirin: alma", output="the apple")) == "language"
    assert kept.rejected[0]["detail"] == "instruction in en"
    short = pool(language_of=lambda text: "en" if "apple" in text else "az")
    assert short.consider(task("Bu sözü ingilis dilinə çevirin: alma", output="the apple")) is None
    undetermined = pool(language_of=lambda text: "")
    assert undetermined.consider(task("Write a short story about the sea and a boat.")) is None


def test_the_real_identifier_rejects_another_language():
    assert pool(language_of=None).consider(task("Write a short story about a brave little dog.")) == "language"
    uzbek = filters.Pool([], languages.load("uz"), SelfInstruct())
    good = {"input": "", "output": "Toshkent Oʻzbekistonning eng katta shahri va poytaxtidir."}
    assert uzbek.consider(task("Oʻzbekistonning poytaxti qaysi shahar ekanini ayting.", **good)) is None
    assert uzbek.consider(task("Write a short story about a brave little dog.", **good)) == "language"


def test_the_word_limits_come_from_the_settings():
    assert pool(SelfInstruct(min_words=2)).consider(task("Qısa yazın.")) is None
    assert pool(SelfInstruct(max_words=4)).consider(task("Bu mətni bir az qısaldın.")) == "length"


def test_contamination_off_keeps_a_near_copy():
    copy = task("Bu cümləni ingilis dilinə tərcümə edin.", input=HELD_OUT["flores"][0]["input"])
    assert pool(SelfInstruct(contamination=0)).consider(copy) is None


def test_the_blacklist_matches_stems_whole_words_and_phrases_after_folding():
    pattern = filters.blacklist_pattern(["şəkl", "go to", "image"], ["şəkil"])
    found = [pattern.search(filters.rouge.fold(text)) for text in ("ŞƏKLİNİ", "Go To it", "Images", "şəkildə", "İMAGE")]
    assert [bool(f) for f in found] == [True, True, True, False, True]
    assert not pattern.search("imagine a gogo tomato")
    assert filters.blacklist_pattern([], []) is None


def test_every_block_ends_in_exactly_one_place():
    response = "\n###\n".join(
        [
            " Dünyanın ən hündür dağı hansıdır?\n3. Input:\n<noinput>\n3. Output:\nEverest dağıdır.",
            "4. Instruction: Bu şəkli təsvir edin indi.\n4. Input:\n<noinput>\n4. Output:\nOlmaz.",
            "malformed",
            "6. Instruction: Dünyanın ən hündür dağı hansıdır?\n6. Input:\n<noinput>\n6. Output:\nEverest.",
            "7. Instruction: Üç meyvə adı sadalayın, zəhmət olmasa.\n7. Input:\n<noinput>\n"
            "7. Output:\nAlma, armud, heyva.",
            "8. Instruction: Yarımçıq",
        ]
    )
    candidates = prompt.parse_response(response, 3, "length", request=4)
    kept = pool()
    rules = [kept.consider(c) for c in candidates]
    assert rules == [None, "blacklist", "format", "duplicate", None, "truncated"]
    assert len(kept.kept) + len(kept.rejected) == len(candidates) == 6
    assert sum(kept.counts().values()) == 6 and set(kept.counts()) == {"kept", *filters.RULES}
    assert [(r["request"], r["position"]) for r in kept.rejected] == [(4, 1), (4, 2), (4, 3), (4, 5)]
