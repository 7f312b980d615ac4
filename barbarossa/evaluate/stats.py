"""Bootstrap intervals for every evaluation metric, and paired tests of a candidate against its base.

A leaderboard that ranks on point estimates from a few hundred rows promotes
noise. Evaluation keeps a few numbers per eval row (`per_row`, see below);
this module resamples rows with replacement and recomputes each metric from
the resample — corpus-level metrics (chrF++, BLEU, bits per byte, loss) from
their summed sufficient statistics, exactly as sacrebleu's own paired
bootstrap does — giving a percentile interval per metric. A candidate and its
base were scored on the same rows in the same order, so the paired test draws
the same resamples for both and reads the interval (and a two-sided p-value)
of their difference.

`per_row` (what `evaluation` returns, plain lists, one entry per eval row):

    nll, tokens, bytes      the loss rows: response NLL in nats (EOS included), tokens scored,
                            UTF-8 bytes of the reference where the whole response was scored (else 0)
    chrf, bleu              the generation rows: sacrebleu's segment statistics (CHRF(word_order=2),
                            BLEU() defaults), [hyp, ref, match] per n-gram order / [hyp_len, ref_len,
                            correct×4, total×4]
    fidelity, degenerate    the generation rows: 1 when the answer is in the run's language / degenerate
                            (runs from before language packs wrote `az` for fidelity; it is read as such)
    undetermined            the generation rows: 1 when the answer is too short to tell its language
                            (evaluate/langid.py); fidelity is the share among the others. Runs from before
                            it have none: every answer was judged

Everything is numpy and vectorised over resamples: one (resamples × rows)
matrix of draw counts per row group, one matmul for all summed statistics.

`add_intervals` and `add_paired` put the intervals and paired tests on a
leaderboard row (decide/leaderboard.py builds the rows), with the bootstrap
settings of the release policy.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache

import numpy as np

from barbarossa import metric_registry
from barbarossa.config import Policy

CHRF_CHAR_ORDER, CHRF_WORD_ORDER, CHRF_BETA = 6, 2, 2  # sacrebleu CHRF(word_order=2): chrF++
BLEU_ORDER = 4


def chrf_from_stats(sums: np.ndarray) -> np.ndarray:
    """chrF++ (0..100) of each row of summed segment statistics, as sacrebleu's CHRF._compute_f_score.

    Averages precision and recall over the orders that have both hypothesis
    and reference n-grams (sacrebleu's default effective-order averaging,
    no epsilon smoothing), then takes F-beta of the averages.
    """
    triples = np.asarray(sums, dtype=float).reshape(len(sums), -1, 3)
    hyp, ref, match = triples[..., 0], triples[..., 1], triples[..., 2]
    counted = (hyp > 0) & (ref > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(counted, match / np.where(hyp > 0, hyp, 1), 0.0).sum(1)
        recall = np.where(counted, match / np.where(ref > 0, ref, 1), 0.0).sum(1)
        orders = counted.sum(1)
        precision, recall = precision / np.maximum(orders, 1), recall / np.maximum(orders, 1)
        factor = CHRF_BETA**2
        score = 100 * (1 + factor) * precision * recall / (factor * precision + recall)
    return np.where(precision + recall > 0, score, 0.0)


def bleu_from_stats(sums: np.ndarray) -> np.ndarray:
    """Corpus BLEU of each row of summed [hyp_len, ref_len, correct×4, total×4], as sacrebleu's BLEU.compute_bleu.

    sacrebleu's defaults: 'exp' smoothing (each order with no match gets
    precision 100 / (2^k × total), k counting such orders so far), an order with
    no hypothesis n-grams ends the product (log 0: BLEU 0), brevity penalty.
    """
    sums = np.asarray(sums, dtype=float)
    hyp_len, ref_len = sums[:, 0], sums[:, 1]
    correct, total = sums[:, 2 : 2 + BLEU_ORDER], sums[:, 2 + BLEU_ORDER :]
    present = np.cumprod(total > 0, axis=1).astype(bool)  # sacrebleu stops at the first order with no n-grams
    unmatched = present & (correct == 0)
    halvings = np.cumsum(unmatched, axis=1)
    safe_total = np.where(total > 0, total, 1)
    precision = np.where(unmatched, 100.0 / (2.0**halvings * safe_total), 100.0 * correct / safe_total)
    precision = np.where(present, precision, 0.0)
    with np.errstate(divide="ignore"):
        logs = np.where(precision > 0, np.log(np.where(precision > 0, precision, 1)), -9999999999.0)
        penalty = np.where(hyp_len < ref_len, np.exp(1 - ref_len / np.where(hyp_len > 0, hyp_len, 1)), 1.0)
    penalty = np.where((hyp_len < ref_len) & (hyp_len == 0), 0.0, penalty)
    score = penalty * np.exp(logs.mean(1))
    return np.where(correct.sum(1) > 0, score, 0.0)


def _loss_columns(per_row: dict) -> np.ndarray | None:
    """Per loss row: [nll, tokens, bytes, nll of wholly scored responses] (bits per byte uses only the latter)."""
    if not per_row.get("tokens"):
        return None
    nll, tokens, size = (np.asarray(per_row[k], dtype=float) for k in ("nll", "tokens", "bytes"))
    return np.column_stack([nll, tokens, size, np.where(size > 0, nll, 0.0)])


def _generation_columns(per_row: dict) -> np.ndarray | None:
    """Per generation row: [1, chrF stats, BLEU stats, fidelity, undetermined, degenerate] (undetermined 0 for
    runs from before it, so their rows pair with today's)."""
    flags = fidelity_rows(per_row)
    if not flags:
        return None
    ones = np.ones(len(flags))
    return np.column_stack(
        [
            ones,
            np.asarray(per_row["chrf"], dtype=float),
            np.asarray(per_row["bleu"], dtype=float),
            np.asarray(flags, dtype=float),
            np.asarray(per_row.get("undetermined") or np.zeros(len(flags)), dtype=float),
            np.asarray(per_row["degenerate"], dtype=float),
        ]
    )


def fidelity_rows(per_row: dict) -> list:
    """The per-row fidelity flags (named `az` by runs from before language packs)."""
    return per_row.get("fidelity") or per_row.get("az") or []


def _loss_metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = sums[:, 0] / sums[:, 1]
        bits = sums[:, 3] / (math.log(2) * sums[:, 2])
    return {"eval_loss": loss, "perplexity": np.exp(np.minimum(loss, 50)), "bits_per_byte": bits}


def _generation_metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
    chrf_width = 3 * (CHRF_CHAR_ORDER + CHRF_WORD_ORDER)
    rows, chrf, rest = sums[:, 0], sums[:, 1 : 1 + chrf_width], sums[:, 1 + chrf_width :]
    in_language, undetermined, degenerate = rest[:, -3], rest[:, -2], rest[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):  # no answer long enough to tell: no fidelity (nan)
        fidelity = in_language / (rows - undetermined)
    return {
        "chrf": chrf_from_stats(chrf),
        "bleu": bleu_from_stats(rest[:, : 2 + 2 * BLEU_ORDER]),
        "fidelity": fidelity,
        "undetermined_rate": undetermined / rows,
        "degenerate_rate": degenerate / rows,
    }


def _choice_columns(per_row: dict) -> np.ndarray | None:
    """Per multiple-choice item: [1, correct, correct by length-normalised NLL]."""
    if not per_row.get("correct"):
        return None
    return np.column_stack(
        [
            np.ones(len(per_row["correct"])),
            np.asarray(per_row["correct"], dtype=float),
            np.asarray(per_row["correct_norm"], dtype=float),
        ]
    )


def _choice_metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
    return {"accuracy": sums[:, 1] / sums[:, 0], "accuracy_norm": sums[:, 2] / sums[:, 0]}


def _chrf_group(key: str):
    """A group for one direction of a translation benchmark: its chrF++ segment statistics per sentence."""

    def columns(per_row: dict) -> np.ndarray | None:
        return np.asarray(per_row[key], dtype=float) if per_row.get(key) else None

    def metrics(sums: np.ndarray) -> dict[str, np.ndarray]:
        return {key: chrf_from_stats(sums)}

    return columns, metrics


GROUPS = (
    (_loss_columns, _loss_metrics),
    (_generation_columns, _generation_metrics),
    (_choice_columns, _choice_metrics),
    _chrf_group("chrf_into"),
    _chrf_group("chrf_out"),
)


@lru_cache(maxsize=4)
def draw_counts(rows: int, samples: int, seed: int) -> np.ndarray:
    """(samples × rows) how often each row is drawn in each resample; the same for every model with this many rows.

    Counts rather than indices so summed statistics are one matmul. Seeded by
    (seed, rows), so a candidate and its base — same rows — get the same resamples.
    """
    rng = np.random.default_rng([seed, rows])
    picks = rng.integers(0, rows, size=(samples, rows)) + rows * np.arange(samples)[:, None]
    counts = np.bincount(picks.ravel(), minlength=samples * rows).reshape(samples, rows).astype(float)
    counts.flags.writeable = False
    return counts


def point(per_row: dict) -> dict[str, float]:
    """Every metric from the full per-row data (the numbers the intervals surround)."""
    out = {}
    for columns, metrics in GROUPS:
        matrix = columns(per_row)
        if matrix is not None:
            out.update({k: float(v[0]) for k, v in metrics(matrix.sum(0, keepdims=True)).items()})
    return out


def _bounds(values: np.ndarray, confidence: float) -> list[float] | None:
    """The percentile interval of resampled values; None where no resample gave a number."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [round(float(lo), 5), round(float(hi), 5)]


def intervals(per_row: dict, confidence: float = 0.95, samples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """{metric: [lo, hi]}: the percentile bootstrap interval of each metric that has per-row data."""
    out = {}
    for columns, metrics in GROUPS:
        matrix = columns(per_row)
        if matrix is not None:
            resampled = metrics(draw_counts(len(matrix), samples, seed) @ matrix)
            out.update({k: _bounds(v, confidence) for k, v in resampled.items()})
    return out


def aligned(candidate: dict, base: dict) -> bool:
    """Whether two models were scored on the same rows in the same order (a paired test needs it).

    Reference-only numbers must agree row by row: the bytes of each reference,
    and chrF's reference n-gram counts.
    """
    shared = [k for k, v in candidate.items() if isinstance(v, list) and isinstance(base.get(k), list)]

    def rows(per_row: dict) -> list[int]:
        return [len(per_row[k]) for k in shared] + [len(per_row.get("tokens") or [])]

    def ref_counts(per_row: dict) -> dict:
        return {k: [s[1::3] for s in per_row.get(k) or []] for k in ("chrf", "chrf_into", "chrf_out")}

    return (
        candidate.get("bytes") == base.get("bytes")
        and rows(candidate) == rows(base)
        and ref_counts(candidate) == ref_counts(base)
    )


def p_value(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value of 'no difference': twice the share of resampled deltas on the far side of zero.

    +1-corrected (never 0 from a finite number of resamples); inverting the
    percentile interval, so the interval at confidence c excludes zero about
    when p < 1 - c. Identical models (every delta 0) get p = 1.
    """
    deltas = deltas[np.isfinite(deltas)]
    if not len(deltas):
        return 1.0
    below, above = (np.sum(deltas <= 0) + 1) / (len(deltas) + 1), (np.sum(deltas >= 0) + 1) / (len(deltas) + 1)
    return float(min(1.0, 2 * min(below, above)))


def paired(
    candidate: dict, base: dict, confidence: float = 0.95, samples: int = 1000, seed: int = 0
) -> dict[str, dict] | None:
    """{metric: {'ci': [lo, hi], 'p': p}} for candidate − base, rows resampled together; None if rows differ."""
    if not aligned(candidate, base):
        return None
    out = {}
    for columns, metrics in GROUPS:
        mine, theirs = columns(candidate), columns(base)
        if mine is None or theirs is None:
            continue
        sums = draw_counts(len(mine), samples, seed) @ np.hstack([mine, theirs])
        width = mine.shape[1]
        ours, reference = metrics(sums[:, :width]), metrics(sums[:, width:])
        for name in ours:
            deltas = ours[name] - reference[name]
            out[name] = {"ci": _bounds(deltas, confidence), "p": round(p_value(deltas), 4)}
    return out


# --------------------------------------------------------------------------- on leaderboard rows


def heldout_metrics() -> list[str]:
    """The held-out metrics (registry groups loss and generation): a row gets each one's interval and, on a
    candidate, its paired test, in this order (bits per byte after the per-token loss metrics, where rows have
    always had it)."""
    loss = sorted((m.key for m in metric_registry.by_group("loss")), key=lambda key: key == "bits_per_byte")
    return loss + [m.key for m in metric_registry.by_group("generation")]


def bootstrap_settings(policy: Policy) -> dict:
    """The `intervals` / `paired` keyword arguments a release policy asks for (confidence, resamples, seed)."""
    return {
        "confidence": policy.confidence,
        "samples": policy.bootstrap_samples,
        "seed": policy.bootstrap_seed,
    }


def add_intervals(row: dict, per_row: dict, policy: Policy) -> None:
    """`<metric>_ci` on a leaderboard row (None without per-row data), on each of its extra sets' and benchmarks'
    scores, and the bootstrap's settings; `per_row` is the task's {'heldout', 'extra_sets', 'benchmarks'}."""
    settings = bootstrap_settings(policy)
    found = intervals(per_row["heldout"], **settings) if per_row.get("heldout") else {}
    row.update({f"{metric}_ci": found.get(metric) for metric in heldout_metrics()})
    row["extra_sets"] = copy.deepcopy(row["extra_sets"])  # the task result's dict stays as it was
    for name, scores in row["extra_sets"].items():
        rows = (per_row.get("extra_sets") or {}).get(name)
        if rows:
            extra = intervals(rows, **settings)
            scores.update({f"{metric}_ci": extra[metric] for metric in extra if metric in scores})
    row["benchmarks"] = copy.deepcopy(row.get("benchmarks") or {})
    for name, scores in row["benchmarks"].items():
        rows = (per_row.get("benchmarks") or {}).get(name)
        found = intervals(rows, **settings) if rows else {}
        scores.update(
            {f"{m.key}_ci": found.get(m.key) for m in metric_registry.by_group("benchmark") if m.key in scores}
        )
    row["bootstrap"] = {
        **settings,
        "loss_rows": len((per_row.get("heldout") or {}).get("tokens") or []),
        "generated_rows": len(fidelity_rows(per_row.get("heldout") or {})),
    }


def add_paired(row: dict, mine: dict, theirs: dict, policy: Policy) -> None:
    """`delta_<metric>_ci` and `delta_<metric>_p` against the base, rows resampled together (None where impossible)."""
    found = {}
    if mine.get("heldout") and theirs.get("heldout"):
        found = paired(mine["heldout"], theirs["heldout"], **bootstrap_settings(policy)) or {}
    for metric in heldout_metrics():
        row[f"delta_{metric}_ci"] = (found.get(metric) or {}).get("ci")
        row[f"delta_{metric}_p"] = (found.get(metric) or {}).get("p")
