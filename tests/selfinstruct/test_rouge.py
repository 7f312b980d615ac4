"""ROUGE-L on Unicode words: rouge-score's scores on English, words (not ASCII fragments) elsewhere, and a pool
whose bounds decide exactly as scoring every pair."""

import random

import pytest
from rouge_score import rouge_scorer

from barbarossa.selfinstruct import rouge

ENGLISH = [
    ("Give three tips for staying healthy.", "Give three tips for a healthy diet."),
    ("What is the capital of France?", "Name the capital city of France."),
    ("Write a short poem about the sea.", "Summarise the following article in two sentences."),
    ("Classify the sentence as positive or negative.", "Classify the following sentence as positive, negative"),
    ("Don't repeat the verb; it's 2024.", "It's 2024, don't you repeat the same verb twice?"),
    ("Rewrite the text in passive voice", "rewrite THE text, in the passive VOICE"),
    ("", "Anything at all"),
]
UNRELATED_AZ = [
    ("Azərbaycanın paytaxtı hansı şəhərdir?", "Günəş sistemində ən böyük planet hansıdır?"),
    ("Bu mətni qısa şəkildə xülasə edin.", "Su dəniz səviyyəsində neçə dərəcədə qaynayır?"),
    ("Xəzər dənizinin ən dərin yeri haradadır?", "Şeirin əsas mövzusunu izah edin."),
]


def test_a_word_is_a_run_of_unicode_letters_and_digits_casefolded():
    assert rouge.words("Azərbaycanın paytaxtı") == ["azərbaycanin", "paytaxti"]  # ı folded to i
    assert len(rouge.words("Azərbaycanın paytaxtı")) == 2
    assert rouge.words("İSTANBUL, Işıq; oʻzbek tili!") == ["istanbul", "işiq", "oʻzbek", "tili"]
    assert rouge.words("Қазақстанның астанасы — Астана.") == ["қазақстанның", "астанасы", "астана"]
    assert rouge.words("snake_case 42") == ["snake", "case", "42"]


@pytest.mark.parametrize("a, b", ENGLISH)
def test_rouge_l_equals_rouge_score_on_english(a, b):
    expected = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    assert rouge.rouge_l(a, b) == pytest.approx(expected, abs=1e-12)
    assert rouge.rouge_l(b, a) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("a, b", UNRELATED_AZ)
def test_unrelated_azerbaijani_sentences_score_near_zero_where_rouge_score_finds_overlap(a, b):
    assert rouge.rouge_l(a, b) <= 0.1
    assert rouge.rouge_l(a, a) == 1.0


def test_rouge_score_splits_azerbaijani_words_into_ascii_fragments():
    """Why rouge.py exists: rouge-score scores the first unrelated pair about 0.22."""
    a, b = UNRELATED_AZ[0]
    assert rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure > 0.2
    assert rouge.rouge_l(a, b) == 0


def test_the_bit_parallel_lcs_equals_the_textbook_table():
    def table(a, b):
        rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                rows[i + 1][j + 1] = rows[i][j] + 1 if x == y else max(rows[i][j + 1], rows[i + 1][j])
        return rows[-1][-1]

    rng = random.Random(0)
    for _ in range(2000):
        a = [rng.randrange(6) for _ in range(rng.randrange(0, 40))]
        b = [rng.randrange(6) for _ in range(rng.randrange(0, 40))]
        assert rouge.lcs_length(a, b) == table(a, b)


def random_instructions(rng: random.Random, n: int) -> list[list[str]]:
    """Instructions of 3-20 words from a small vocabulary, many near-copies of earlier ones: both branches."""
    vocabulary = [f"w{i}" for i in range(40)]
    made = []
    for _ in range(n):
        if made and rng.random() < 0.4:
            words = list(rng.choice(made))
            for _ in range(rng.randrange(0, 4)):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
        else:
            words = [rng.choice(vocabulary) for _ in range(rng.randrange(3, 21))]
        made.append(words)
    return made


@pytest.mark.parametrize("threshold", [0.3, 0.7, 0.9])
def test_the_pools_bounds_decide_as_the_naive_scan(threshold):
    rng = random.Random(threshold)
    pool, entries = rouge.SimilarityPool(), []
    for words in random_instructions(rng, 400):
        found, naive = pool.most_similar(words, threshold), rouge.naive_most_similar(words, entries, threshold)
        assert (found is None) == (naive is None)
        if found:
            assert found[0] == naive[0] and found[0] > threshold
            assert rouge.f1(rouge.lcs_length(words, entries[found[1]]), len(words), len(entries[found[1]])) == found[0]
        if found is None:  # a self-instruct pool keeps what is not similar
            pool.add(words)
            entries.append(words)
    assert 10 < len(entries) < 400


def test_an_empty_query_or_pool_finds_nothing():
    pool = rouge.SimilarityPool()
    assert pool.most_similar(["a"], 0.5) is None
    pool.add(["a", "b"])
    assert pool.most_similar([], 0.5) is None
    assert pool.most_similar(["a", "b"], 0.5) == (1.0, 0)
