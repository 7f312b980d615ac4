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
    assert fidelity["score"] == pytest.approx(sum(fidelity["segments"]) / 21)


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
