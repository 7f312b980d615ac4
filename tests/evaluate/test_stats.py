"""Bootstrap intervals and paired tests (barbarossa/evaluate/stats.py) on numbers whose answer is known."""

import math
import random
import time

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF
from test_metrics import AZ, TR

from barbarossa.config import Policy
from barbarossa.evaluate import protocol, stats

HYPOTHESES = [AZ[0], TR[1], "", "Bakı", AZ[2][:20], "çox çox çox çox", AZ[1]]
REFERENCES = [AZ[0], AZ[1], AZ[2], "Bakı gözəl şəhərdir.", AZ[2], AZ[1], TR[1]]


def segment_stats(metric, hypotheses, references):
    return np.array(metric._extract_corpus_statistics(hypotheses, [references]), dtype=float)


@pytest.mark.parametrize(
    "metric, score", [(CHRF(word_order=2), stats.chrf_from_stats), (BLEU(), stats.bleu_from_stats)]
)
def test_vectorised_corpus_scores_equal_sacrebleu_on_every_resample(metric, score):
    rng = random.Random(0)
    samples = [list(range(len(HYPOTHESES)))] + [[rng.randrange(len(HYPOTHESES)) for _ in HYPOTHESES] for _ in range(30)]
    samples += [[2], [2, 2], [3], [0, 0, 0]]  # an empty answer alone; answers too short for the higher n-gram orders
    segments = segment_stats(metric, HYPOTHESES, REFERENCES)
    ours = score(np.stack([segments[s].sum(0) for s in samples]))
    theirs = [metric.corpus_score([HYPOTHESES[i] for i in s], [[REFERENCES[i] for i in s]]).score for s in samples]
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert len(set(np.round(ours, 6))) > 5  # the resamples really differ


def per_row_for(predictions, references, nll=(), tokens=(), sizes=()):
    """per_row as evaluation builds it: loss rows given, generation rows scored by the real metric modules."""
    _, generation = protocol.score_generations(predictions, references)
    return {"nll": list(nll), "tokens": list(tokens), "bytes": list(sizes), **generation}


def test_point_estimates_from_per_row_numbers_equal_the_metric_modules():
    per_row = per_row_for(HYPOTHESES, REFERENCES, nll=[10.0, 20.0, 5.0], tokens=[5, 8, 4], sizes=[12, 0, 9])
    scores = protocol.score_generations(HYPOTHESES, REFERENCES)[0]
    found = stats.point(per_row)
    for metric in ("chrf", "bleu", "fidelity", "undetermined_rate", "degenerate_rate"):
        assert found[metric] == pytest.approx(scores[metric], abs=1e-3)
    assert found["eval_loss"] == pytest.approx(35 / 17)
    assert found["bits_per_byte"] == pytest.approx(15 / (math.log(2) * 21))  # the cut row (bytes 0) is left out
    assert found["perplexity"] == pytest.approx(math.exp(35 / 17))


def noisy_loss_rows(rows, bits_per_byte, seed, noise=0.3):
    """Loss rows of a model with the given bits per byte, each row's rate noisy."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(80, 400, rows)
    rates = bits_per_byte + noise * rng.standard_normal(rows)
    nll = rates * sizes * math.log(2)
    return {"nll": nll.round(4).tolist(), "tokens": (sizes // 2).tolist(), "bytes": sizes.tolist()}


def test_interval_surrounds_the_point_narrows_with_rows_and_is_reproducible():
    small, large = noisy_loss_rows(50, 1.5, seed=1), noisy_loss_rows(2000, 1.5, seed=1)
    for rows in (small, large):
        lo, hi = stats.intervals(rows)["bits_per_byte"]
        assert lo < stats.point(rows)["bits_per_byte"] < hi
    width = lambda rows: np.diff(stats.intervals(rows)["bits_per_byte"])[0]  # noqa: E731
    assert width(large) < width(small) / 4  # ~ 1/sqrt(rows)
    assert stats.intervals(small) == stats.intervals(small)
    assert stats.intervals(small, seed=1) != stats.intervals(small, seed=2)
    assert np.diff(stats.intervals(small, confidence=0.5)["bits_per_byte"])[0] < width(small)


def test_constant_rows_give_a_zero_width_interval():
    rows = {
        "nll": [math.log(2) * 10] * 20,
        "tokens": [5] * 20,
        "bytes": [10] * 20,
        "fidelity": [1] * 20,
        "degenerate": [0] * 20,
        "chrf": [[3, 3, 3] * 8] * 20,
        "bleu": [[4, 4, 4, 3, 2, 1, 4, 3, 2, 1]] * 20,
    }
    found = stats.intervals(rows)
    assert found["bits_per_byte"] == [1.0, 1.0] and found["fidelity"] == [1.0, 1.0] and found["chrf"] == [100.0, 100.0]


def shifted(rows, by):
    """The same rows scored by a model `by` bits per byte better on each (a paired difference)."""
    return {**rows, "nll": [n - by * b * math.log(2) for n, b in zip(rows["nll"], rows["bytes"])]}


def test_paired_test_finds_a_small_consistent_gain_that_unpaired_intervals_miss():
    base = noisy_loss_rows(200, 1.5, seed=3, noise=0.5)
    better = shifted(base, 0.02)  # tiny against the between-row noise, but every row gains
    result = stats.paired(better, base)["bits_per_byte"]
    assert result["ci"][1] < 0 and result["p"] < 0.01
    assert result["ci"][0] == pytest.approx(-0.02, abs=1e-4) and result["ci"][1] == pytest.approx(-0.02, abs=1e-4)
    lo, hi = stats.intervals(base)["bits_per_byte"]
    assert lo < stats.point(better)["bits_per_byte"] < hi  # side by side, the two intervals overlap


def test_paired_test_of_noise_is_not_significant_and_of_a_model_with_itself_is_p_1():
    base = noisy_loss_rows(300, 1.5, seed=4)
    rng = np.random.default_rng(5)
    jitter = {**base, "nll": [n + 0.02 * b * rng.standard_normal() for n, b in zip(base["nll"], base["bytes"])]}
    result = stats.paired(jitter, base)["bits_per_byte"]
    assert result["ci"][0] < 0 < result["ci"][1] and result["p"] > 0.05
    same = stats.paired(base, base)["bits_per_byte"]
    assert same == {"ci": [0.0, 0.0], "p": 1.0}


def test_paired_generation_metrics_and_p_value_agree_with_the_interval():
    references = AZ * 20
    base = per_row_for(TR * 20, references)
    tuned = per_row_for(AZ[:2] + TR[2:] + TR * 19, references)  # better on two rows of sixty
    much = per_row_for(AZ * 20, references)
    for candidate in (tuned, much):
        found = stats.paired(candidate, base)
        for metric in ("chrf", "bleu", "fidelity"):
            lo, hi = found[metric]["ci"]
            excludes = lo > 0 or hi < 0
            assert excludes == (found[metric]["p"] < 0.05) or abs(found[metric]["p"] - 0.05) < 0.02
    assert stats.paired(much, base)["fidelity"]["ci"][0] > 0.5


def test_rows_that_differ_are_not_paired():
    base = per_row_for(TR, AZ, nll=[3.0, 4.0], tokens=[2, 2], sizes=[5, 6])
    assert stats.paired(base, base) is not None
    assert stats.paired({**base, "bytes": [5, 7]}, base) is None  # another eval set
    assert (
        stats.paired(per_row_for(TR, [AZ[1], AZ[0], AZ[2]], nll=[3.0, 4.0], tokens=[2, 2], sizes=[5, 6]), base) is None
    )


def test_p_value_is_twice_the_far_tail_and_never_zero():
    assert stats.p_value(np.array([1.0] * 999)) == pytest.approx(2 / 1000)
    assert stats.p_value(np.array([-1.0] * 100 + [1.0] * 900)) == pytest.approx(2 * 101 / 1001)
    assert stats.p_value(np.zeros(10)) == 1.0


def test_a_thousand_resamples_of_a_thousand_rows_take_well_under_a_second_per_pair():
    rng = np.random.default_rng(0)
    references = (AZ + TR) * 100
    tuned = {**per_row_for(list(rng.permutation(references)), references), **noisy_loss_rows(1000, 1.4, seed=6)}
    base = {**per_row_for(list(rng.permutation(references)), references), **noisy_loss_rows(1000, 1.5, seed=6)}
    stats.draw_counts.cache_clear()
    started = time.perf_counter()
    found = stats.paired(tuned, base, samples=1000)
    intervals = [stats.intervals(rows, samples=1000) for rows in (tuned, base)]
    seconds = time.perf_counter() - started
    assert set(found) == set(stats.heldout_metrics()) and all(len(i) == len(found) for i in intervals)
    assert seconds < 0.5, seconds


POLICY_BOOTSTRAP = Policy(confidence=0.95, bootstrap_samples=1000, bootstrap_seed=0)


def test_a_leaderboard_row_gets_intervals_and_paired_tests_and_keeps_none_where_there_are_no_per_row_numbers():
    base = noisy_loss_rows(200, 1.5, seed=3, noise=0.5)
    better = shifted(base, 0.02)
    row = {"extra_sets": {"qa": {"bits_per_byte": 1.5}}, "benchmarks": {}}
    stats.add_intervals(row, {"heldout": better, "extra_sets": {"qa": base}}, POLICY_BOOTSTRAP)
    stats.add_paired(row, {"heldout": better}, {"heldout": base}, POLICY_BOOTSTRAP)
    assert row["bits_per_byte_ci"] == stats.intervals(better)["bits_per_byte"] and row["chrf_ci"] is None
    assert row["delta_bits_per_byte_ci"][1] < 0 and row["delta_bits_per_byte_p"] < 0.01 and row["delta_chrf_p"] is None
    assert row["extra_sets"]["qa"]["bits_per_byte_ci"] == stats.intervals(base)["bits_per_byte"]
    assert row["bootstrap"] == {"confidence": 0.95, "samples": 1000, "seed": 0, "loss_rows": 200, "generated_rows": 0}
    bare = {"extra_sets": {}}
    stats.add_intervals(bare, {}, POLICY_BOOTSTRAP)
    stats.add_paired(bare, {}, {}, POLICY_BOOTSTRAP)
    assert all(bare[f"{m}_ci"] is None and bare[f"delta_{m}_p"] is None for m in ("eval_loss", "fidelity"))


def test_fidelity_is_resampled_over_the_answers_long_enough_to_tell():
    answers = [AZ[0], AZ[1], TR[0], "Bəli.", "Yes", "No."]
    per_row = per_row_for(answers, AZ * 2)
    assert per_row["undetermined"] == [0, 0, 0, 1, 1, 1]
    found = stats.point(per_row)
    assert found["fidelity"] == pytest.approx(2 / 3) and found["undetermined_rate"] == pytest.approx(0.5)
    lo, hi = stats.intervals(per_row)["undetermined_rate"]
    assert lo < 0.5 < hi
    assert math.isnan(stats.point(per_row_for(["Yes", "No."], AZ[:2]))["fidelity"])  # none judged: no fidelity
    earlier = {k: v for k, v in per_row.items() if k != "undetermined"}  # a run from before the count
    assert stats.point(earlier)["fidelity"] == pytest.approx(2 / 6) and stats.point(earlier)["undetermined_rate"] == 0
    assert stats.paired(per_row, earlier)["undetermined_rate"]["ci"][0] > 0  # rows of both still pair
