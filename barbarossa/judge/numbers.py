"""The judge's numbers: a win rate with a bootstrap interval and p-value over prompts, a length-controlled win rate
beside it, and the leaderboard row's `judge.*` fields.

Win rate: the candidate's mean score over the parsed pairs (a win 1, a tie 0.5, a loss 0). Its interval is the
percentile bootstrap over prompts (evaluate/stats.py's resamples, seeded); its p-value the project's two-sided
bootstrap test of "no better or worse than the other model" (resampled win rate − 0.5 against zero).

Length-controlled win rate (AlpacaEval 2's idea, fitted here): a judge that likes long answers rewards a model for
talking more. A logistic model of the score on tanh(length difference / its standard deviation), fitted by Newton's
method on the fractional scores (a tie is half a win and half a loss), read at a length difference of zero: the
win rate the candidate would have had if its answers were as long as the other's. Where it moves the rate by more
than LENGTH_MOVE the row says so (`judge.length_moved_vs_*`).
"""

from __future__ import annotations

import math

import numpy as np

from barbarossa.evaluate import stats
from barbarossa.judge.pairs import Judgement
from barbarossa.judge.settings import Judge

LENGTH_MOVE = 0.10  # a length-controlled rate this far from the raw one is worth a sentence on the card
SLOPE_RIDGE = 1e-3  # keeps the slope finite where length alone separates wins from losses (docs/judge.md)
AGAINST = ("base", "release")


def win_rate(outcomes: list[float]) -> float | None:
    """The mean score (ties count half); None with no parsed pair."""
    return round(float(np.mean(outcomes)), 5) if outcomes else None


def bootstrap(outcomes: list[float], samples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """([lo, hi], p) of the win rate, prompts resampled with replacement; (None, None) with no parsed pair."""
    if not outcomes:
        return None, None
    scores = np.asarray(outcomes, dtype=float)
    rates = stats.draw_counts(len(scores), samples, seed) @ scores / len(scores)
    lo, hi = np.quantile(rates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [round(float(lo), 5), round(float(hi), 5)], round(stats.p_value(rates - 0.5), 5)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, steps: int = 50, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """(intercept, slope) of P(score) = sigmoid(intercept + slope·x) for fractional scores y in [0, 1], by Newton's
    method on the log-likelihood with a small ridge on the slope only (the intercept is what is read). `weights`:
    how often each pair counts (a bootstrap resample's draw counts)."""
    design = np.column_stack([np.ones_like(x), x])
    w = np.ones_like(y) if weights is None else weights
    ridge = np.diag([0.0, SLOPE_RIDGE])
    beta = np.zeros(2)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (w * (y - p)) - ridge @ beta
        hessian = design.T @ (design * (w * p * (1 - p))[:, None]) + ridge + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def length_controlled(outcomes: list[float], differences: list[int], weights: np.ndarray | None = None) -> float | None:
    """The win rate at a length difference of zero (module docstring); the raw rate where length cannot explain
    anything (every answer pair equally long, or every pair scored alike); None with no parsed pair. `weights`: a
    resample's draw counts (the standardisation stays the full sample's, so resamples are read on one scale)."""
    if not outcomes:
        return None
    y, d = np.asarray(outcomes, dtype=float), np.asarray(differences, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    drawn = y[w > 0]
    if d.std() == 0 or np.all(drawn == drawn[0]):
        return round(float(w @ y / w.sum()), 5)
    intercept, _ = fit_logistic(np.tanh(d / d.std()), y, weights=w)
    return round(1 / (1 + math.exp(-intercept)), 5)


def lc_bootstrap(outcomes: list[float], differences: list[int], samples: int, confidence: float, seed: int):
    """([lo, hi], p) of the length-controlled win rate, refitted on each resample of the prompts (the same
    resamples as the raw rate's); (None, None) with no parsed pair."""
    if not outcomes:
        return None, None
    counts = stats.draw_counts(len(outcomes), samples, seed)
    rates = np.array([length_controlled(outcomes, differences, weights) for weights in counts])
    lo, hi = np.quantile(rates, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [round(float(lo), 5), round(float(hi), 5)], round(stats.p_value(rates - 0.5), 5)


def comparison_fields(judgement: Judgement | None, settings: Judge, against: str) -> dict:
    """`judge.win_rate_vs_<against>` and `judge.lc_win_rate_vs_<against>`, each with its `_ci` and `_p`,
    and `judge.length_moved_vs_<against>`: all None without a judgement or without a parsed pair; and
    `judge.pairs_vs_<against>`, the pairs compared (None: not compared, 0 pairs read: nothing parsed)."""
    outcomes = judgement.outcomes() if judgement else []
    differences = judgement.length_differences() if judgement else []
    rate = win_rate(outcomes)
    drawn = settings.bootstrap_samples, settings.confidence, settings.seed
    interval, p = bootstrap(outcomes, *drawn)
    controlled = length_controlled(outcomes, differences)
    lc_interval, lc_p = lc_bootstrap(outcomes, differences, *drawn)
    moved = abs(controlled - rate) > LENGTH_MOVE if rate is not None and controlled is not None else None
    return {
        f"judge.win_rate_vs_{against}": rate,
        f"judge.win_rate_vs_{against}_ci": interval,
        f"judge.win_rate_vs_{against}_p": p,
        f"judge.lc_win_rate_vs_{against}": controlled,
        f"judge.lc_win_rate_vs_{against}_ci": lc_interval,
        f"judge.lc_win_rate_vs_{against}_p": lc_p,
        f"judge.length_moved_vs_{against}": moved,
        f"judge.pairs_vs_{against}": len(judgement.pairs) if judgement else None,
    }


def row_fields(settings: Judge, vs_base: Judgement | None, vs_release: Judgement | None = None) -> dict:
    """A leaderboard row's judge fields: the numbers against the base and against the last release (None where
    there is none), and over both comparisons the pairs compared, the ties and unparsed pairs among them, the judge's
    calls and tokens."""
    judged = [j for j in (vs_base, vs_release) if j is not None]
    fields = comparison_fields(vs_base, settings, "base") | comparison_fields(vs_release, settings, "release")
    return fields | {
        "judge.pairs": sum(len(j.pairs) for j in judged),
        "judge.ties": sum(j.count("tie") for j in judged),
        "judge.unparsed": sum(j.count(None) for j in judged),
        "judge.model": settings.model,
        "judge.calls": sum(j.calls for j in judged),
        "judge.tokens": sum(j.tokens for j in judged),
    }
