"""Fidelity by language pack: lingua for the languages it models, a character n-gram identifier for Uzbek."""

import json
from pathlib import Path

import pytest

from barbarossa import languages
from barbarossa.evaluate import langid, protocol

SENTENCES = json.loads((Path(__file__).parent / "langid_packs.json").read_text(encoding="utf-8"))


def accuracy(identify: dict, expected: dict[str, str]) -> float:
    """Share of held-out sentences (none in any bundled sample) identified as the language they are in."""
    pairs = [(langid.language_of(s, identify), want) for lang, want in expected.items() for s in SENTENCES[lang]]
    return sum(found == want for found, want in pairs) / len(pairs)


def test_the_ngram_identifier_tells_uzbek_from_its_neighbours_on_unseen_sentences():
    identify = languages.load("uz")["identify"]
    assert identify["method"] == "ngram" and langid.target_code(identify) == "uz"
    assert accuracy(identify, {"uz": "uz", "az": "az", "tr": "tr", "kk": "kk", "en": "en"}) >= 0.9
    assert accuracy(identify, {"uz": "uz"}) >= 0.9


def test_the_kazakh_pack_judges_kazakh_against_russian_and_english():
    identify = languages.load("kk")["identify"]
    assert langid.target_code(identify) == "kk"
    assert accuracy(identify, {"kk": "kk", "en": "en"}) >= 0.9
    fidelity = protocol.load_metric("fidelity").compute(
        predictions=SENTENCES["kk"][:10] + SENTENCES["en"][:10] + [""], identify=identify
    )
    assert fidelity["segments"][:10].count(1) >= 9 and sum(fidelity["segments"][10:]) == 0
    assert fidelity["score"] == pytest.approx(sum(fidelity["segments"]) / 20)  # the empty answer: undetermined


def test_the_same_answer_counts_for_one_pack_and_against_another():
    answer = SENTENCES["tr"][0]
    assert (
        protocol.load_metric("fidelity").compute(predictions=[answer], identify=languages.load("tr")["identify"])[
            "score"
        ]
        == 1
    )
    assert (
        protocol.load_metric("fidelity").compute(predictions=[answer], identify=languages.load("az")["identify"])[
            "score"
        ]
        == 0
    )


# --- short answers: undetermined, not guessed ------------------------------------------------------------------------

PACKS = ("az", "kk", "tr", "uz")
SHORT_ENGLISH = ["No.", "Paris.", "Good morning", "Yes", "Yes, it is."]


@pytest.mark.parametrize("code", PACKS)
def test_short_english_answers_are_undetermined_in_every_pack(code):
    pack = languages.load(code)
    for answer in SHORT_ENGLISH + ["Salam necesen", "Bakı.", "24 × 15 = 360.", ""]:
        assert langid.judged_language(answer, pack["identify"], pack["words"]) == langid.UNDETERMINED, answer


@pytest.mark.parametrize("code", PACKS)
def test_long_answers_are_identified_as_before_in_every_pack(code):
    """Every held-out sentence has 4 words or more: the rule changes nothing there."""
    pack = languages.load(code)
    for sentences in SENTENCES.values():
        for sentence in sentences:
            found = langid.judged_language(sentence, pack["identify"], pack["words"])
            assert found == langid.language_of(sentence, pack["identify"]) != langid.UNDETERMINED


def test_azerbaijani_typed_without_its_letters_is_not_uzbek():
    pack = languages.load("uz")
    for text in ("Salam necesen", "Men bu gun evde qalacam, cunki hava cox soyuqdur."):
        assert langid.judged_language(text, pack["identify"], pack["words"]) != "uz", text


def test_words_without_letters_do_not_count_and_the_packs_word_pattern_does():
    assert langid.letter_words("Cəm: 12 + 15 = 27.") == 1 and langid.too_short("Cəm: 12 + 15 = 27.")
    assert not langid.too_short("Bakı Azərbaycanın ən böyük şəhəridir.")
    capital = "東京は日本の首都"
    assert langid.too_short(capital) and not langid.too_short(capital, r"\w")  # a pattern with a word per character


def test_fidelity_leaves_undetermined_answers_out_and_counts_them_apart():
    identify = languages.load("uz")["identify"]
    fidelity = protocol.load_metric("fidelity")
    long_answers = SENTENCES["uz"][:3] + SENTENCES["en"][:1]
    found = fidelity.compute(predictions=long_answers + ["No.", "Paris.", "Good morning", ""], identify=identify)
    assert found["segments"][:4] == [1, 1, 1, 0] and found["segments"][4:] == [0, 0, 0, 0]
    assert found["undetermined_segments"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert found["score"] == pytest.approx(3 / 4) and found["undetermined"] == pytest.approx(4 / 8)
    assert found["languages"] == {"en": 1, "undetermined": 4, "uz": 3}
    nothing = fidelity.compute(predictions=SHORT_ENGLISH, identify=identify)
    assert nothing["score"] is None and nothing["undetermined"] == 1.0 and sum(nothing["segments"]) == 0


def test_scores_carry_the_undetermined_share_beside_fidelity():
    pack = languages.load("kk")
    answers = SENTENCES["kk"][:2] + ["Иә.", "Yes"]
    scores, per_row = protocol.score_generations(answers, answers, pack)
    assert scores["fidelity"] == 1.0 and scores["undetermined_rate"] == 0.5
    assert per_row["fidelity"] == [1, 1, 0, 0] and per_row["undetermined"] == [0, 0, 1, 1]
    assert protocol.score_generations(["Yes", "No."], ["Иә.", "Жоқ."], pack)[0]["fidelity"] is None
