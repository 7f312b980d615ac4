"""The metric modules on text whose answer is known."""

import pytest

from barbarossa import languages
from barbarossa.data import instructions, prompts
from barbarossa.engine import loading
from barbarossa.evaluate import langid, protocol

AZ_IDENTIFY = languages.load("az")["identify"]


def language_of(text: str) -> str:
    return langid.language_of(text, AZ_IDENTIFY)


AZ = [
    "Bu gün hava çox soyuqdur, ona görə də qalın paltar geyinmək lazımdır.",
    "Mən kitab oxumağı və dostlarımla söhbət etməyi çox sevirəm.",
    "Şəhərin mərkəzində yeni bir park salınıb və axşamlar orada çoxlu adam gəzir.",
]
TR = [
    "Bugün hava çok soğuk, bu yüzden kalın giysiler giymek gerekiyor.",
    "Ben kitap okumayı ve arkadaşlarımla sohbet etmeyi çok seviyorum.",
    "Şehrin merkezinde yeni bir park yapıldı ve akşamları orada birçok insan geziyor.",
]
EN = ["The weather is very cold today, so warm clothes are needed."]
RU = ["Сегодня очень холодно, поэтому нужно надеть тёплую одежду."]


def test_fidelity_tells_azerbaijani_from_turkish_english_and_russian():
    result = protocol.load_metric("fidelity").compute(predictions=AZ + TR + EN + RU + [""], identify=AZ_IDENTIFY)
    assert result["languages"] == {"undetermined": 1, "az": 3, "en": 1, "ru": 1, "tr": 3}
    assert result["score"] == pytest.approx(3 / 8) and result["undetermined"] == pytest.approx(1 / 9)


@pytest.mark.parametrize(
    "text, degenerate",
    [
        ("", True),
        ("   ", True),
        ("səviyyəsində səviyyəsində səviyyəsində səviyyəsində səviyyəsində səviyyəsində", True),
        ("Nə üçün göy mavi görünür. Nə üçün göy mavi görünür. Nə üçün göy mavi görünür.", True),
        ("Göy mavi görünür, çünki atmosfer qısa dalğalı mavi işığı daha çox səpələyir.", False),
        ("Bakı.", False),
    ],
)
def test_degenerate_answers(text, degenerate):
    assert protocol.load_metric("degenerate").compute(predictions=[text])["score"] == float(degenerate)


def test_bleu_and_chrf_score_identity_high_and_mismatch_low():
    metrics = protocol.score_generations(AZ[:2], AZ[:2])[0]
    assert metrics["bleu"] == pytest.approx(100.0) and metrics["chrf"] == pytest.approx(100.0)
    worse = protocol.score_generations(TR[:2], AZ[:2])[0]
    assert worse["bleu"] < 20 and worse["chrf"] < 60 and worse["fidelity"] == 0.0


def test_fertility_counts_tokens_per_word(tiny_llama):
    tokenizer = loading.load_tokenizer(tiny_llama)
    value = protocol.fertility(tokenizer, AZ)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in AZ)
    assert value == pytest.approx(tokens / sum(len(t.split()) for t in AZ)) and value > 1


def test_answers_are_cut_where_the_template_starts_again():
    assert prompts.cut_at_next_section("Bakı.\n\n### Təlimat:\nsual") == "Bakı."
    assert prompts.cut_at_next_section("  Bakı şəhəri  ") == "Bakı şəhəri"


def test_language_identifier_separates_azerbaijani_from_turkish_on_sixty_sentences_each():
    """Sentences written for this test (tests/evaluate/langid_sentences.json), not taken from the training data."""
    import json

    from conftest import ROOT

    sentences = json.loads((ROOT / "tests" / "evaluate" / "langid_sentences.json").read_text(encoding="utf-8"))
    assert len(sentences["az"]) >= 50 and len(sentences["tr"]) >= 50
    training = {r["output"] for r in instructions.load("bundled").records}
    assert not training & set(sentences["az"])
    right = sum(language_of(s) == "az" for s in sentences["az"]) + sum(language_of(s) == "tr" for s in sentences["tr"])
    assert right / (len(sentences["az"]) + len(sentences["tr"])) >= 0.95
    fidelity = protocol.load_metric("fidelity").compute(
        predictions=sentences["az"] + sentences["tr"], identify=AZ_IDENTIFY
    )
    assert fidelity["score"] == pytest.approx(sum(language_of(s) == "az" for s in sentences["az"]) / 120)


def test_metric_modules_return_the_per_answer_numbers_their_corpus_scores_are_built_from():
    """What the leaderboard's bootstrap resamples: summed, they give back the corpus score."""
    from sacrebleu.metrics import BLEU, CHRF

    predictions, references = TR[:2] + AZ[2:] + ["", "Bakı Bakı Bakı Bakı Bakı Bakı"], AZ + AZ[:2]
    for name, metric in (("chrf", CHRF(word_order=2)), ("bleu", BLEU())):
        result = protocol.load_metric(name).compute(predictions=predictions, references=references)
        assert len(result["segments"]) == len(predictions)
        summed = [sum(column) for column in zip(*result["segments"])]
        assert metric._compute_score_from_stats(summed).score == pytest.approx(result["score"])
    fidelity = protocol.load_metric("fidelity").compute(predictions=predictions, identify=AZ_IDENTIFY)
    assert fidelity["segments"][:4] == [0, 0, 1, 0]
    assert fidelity["segments"] == [int(language_of(p) == "az") for p in predictions]
    loops = protocol.load_metric("degenerate").compute(predictions=predictions)
    assert loops["segments"] == [0, 0, 0, 1, 1] and loops["score"] == pytest.approx(0.4)
    scores, per_row = protocol.score_generations(predictions, references)
    assert per_row["fidelity"] == fidelity["segments"] and scores["fidelity"] == pytest.approx(
        sum(fidelity["segments"]) / 4  # the empty answer is too short to tell: left out
    )
    assert per_row["undetermined"] == [0, 0, 0, 1, 0] and scores["undetermined_rate"] == pytest.approx(0.2)
