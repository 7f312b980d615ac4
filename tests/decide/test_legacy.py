"""Runs from before language packs (barbarossa/decide/legacy.py): their rows, per-row files and primaries read
in today's keys."""

from barbarossa import config
from barbarossa.decide import leaderboard, legacy
from barbarossa.evaluate import stats


def test_rows_and_per_row_files_of_runs_from_before_language_packs_still_read():
    old = {
        "name": "x",
        "az_fidelity": 0.9,
        "base_az_fidelity": 0.5,
        "delta_az_fidelity": 0.4,
        "az_fidelity_ci": [0.8, 1.0],
        "delta_az_fidelity_p": 0.01,
        "extra_sets": {"qa": {"az_fidelity": 0.7}},
    }
    row = legacy.upgraded(old)
    assert row["fidelity"] == 0.9 and row["delta_fidelity"] == 0.4 and row["fidelity_ci"] == [0.8, 1.0]
    assert row["delta_fidelity_p"] == 0.01 and row["extra_sets"]["qa"]["fidelity"] == 0.7
    assert row["language"] == "az" and leaderboard.fidelity_label(row) == "Azerbaijani answers"
    assert legacy.upgraded(row) is row  # today's rows come back as they are
    old_rows = {
        "nll": [1.0] * 4,
        "tokens": [2] * 4,
        "bytes": [3] * 4,
        "az": [1, 0, 1, 1],
        "degenerate": [0] * 4,
        "chrf": [[3, 3, 3] * 8] * 4,
        "bleu": [[4, 4, 4, 3, 2, 1, 4, 3, 2, 1]] * 4,
    }
    assert stats.point(old_rows)["fidelity"] == 0.75
    assert config.RENAMED_METRICS["az_fidelity"] == "fidelity"


def test_an_old_primary_is_read_by_its_new_name_and_others_pass_through():
    assert legacy.renamed_metric("az_fidelity") == "fidelity" and legacy.renamed_metric("chrf") == "chrf"
    assert config.Policy(primary="az_fidelity").primary == "fidelity"
