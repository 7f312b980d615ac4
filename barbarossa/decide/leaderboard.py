"""Leaderboard rows and release decisions: pure functions over plain dicts.

Rows are JSON-able so the card, the CLI and later the release step read the
same data. Each candidate row carries its decision and the reasons for it,
worded for a person. Which metrics a row carries, what they are called, which
way is better and how their numbers read: metric_registry.py.

Every held-out metric has a bootstrap interval (`<metric>_ci`) and every
candidate a paired interval and p-value for its difference from its base
(`delta_<metric>_ci`, `delta_<metric>_p`), put on the rows in `build` (stats.py)
from the per-row numbers evaluation returns; those numbers stay in the task
results (and a small file per candidate, `per_row_uri`, that a later run pairs
against) and never enter a row. "Improves on its base" and "beats the last
release" mean the paired interval of the primary metric excludes zero in the
good direction.
"""

from __future__ import annotations

from barbarossa import metric_registry
from barbarossa.config import JUDGE_DIRECTION, Policy
from barbarossa.evaluate import stats
from barbarossa.metric_registry import format_interval, format_p, format_value


def language_name(row: dict) -> str:
    """The name of the row's language (rows from before language packs: Azerbaijani)."""
    return row.get("language_name") or row.get("language") or "Azerbaijani"


def fidelity_label(row: dict) -> str:
    """'Kazakh answers': the fidelity metric named for the row's language."""
    return metric_registry.label("fidelity", language_name(row))


def task_result(item: dict, train: dict | None, metrics: dict | None, *failures, stage: str = "") -> dict:
    """One work item's outcome; the first caught failure (with the stage it hit) becomes its error text."""
    error = next((_failure_text(f) for f in failures if f), None)
    if error and stage:
        error = f"{stage} failed: {error}"
    return {"item": item, "train": train, "metrics": metrics, "error": error}


def gather(tasks) -> list[dict]:
    """Results of one foreach (Metaflow join inputs, or anything with the same attributes); idle items left out."""
    return [
        task_result(t.item, t.train, t.metrics, t.failure, stage=t.stage) for t in tasks if t.item["kind"] != "idle"
    ]


def _failure_text(failure) -> str:
    """'ValueError: message' from a Metaflow @catch wrapper (or any exception); text stays text."""
    if isinstance(failure, str):
        return failure
    kind = getattr(failure, "type", None) or type(failure).__name__
    message = getattr(failure, "exception", None) or str(failure)
    return f"{kind.rsplit('.', 1)[-1]}: {message}"


def base_row(result: dict) -> dict:
    item, metrics = result["item"], result.get("metrics") or {}
    train = result.get("train") or {}
    failed = bool(result.get("error")) or not metrics
    return {
        "name": item["name"],
        "kind": item["kind"],
        "base": item["base"]["name"],
        "family": item["base"]["family"],
        "lora": _describe_lora(item.get("lora")),
        "status": "failed" if failed else "ok",
        "error": result.get("error"),
        **_metric_columns(metrics),
        "custom": metrics.get("custom") or {},
        "extra_sets": metrics.get("extra_sets") or {},
        "benchmarks": metrics.get("benchmarks") or {},
        "train_seconds": train.get("train_seconds"),
        "tokens_per_second": train.get("tokens_per_second"),
        "steps": train.get("steps"),
        # early stopping: where the kept adapter is from, why training stopped, what it saved
        "best_step": (train.get("early") or {}).get("best_step"),
        "stopped": (train.get("early") or {}).get("stopped"),
        "stop_reason": (train.get("early") or {}).get("reason"),
        "gpu_seconds_saved": train.get("gpu_seconds_saved"),
        "micro_batch": train.get("micro_batch"),
        "adapter_uri": train.get("adapter_uri"),
        # how it ran: device, weight dtype, compute precision, attention, quantisation, checkpointing
        "runtime": _runtime_record(train, metrics),
        "peak_gpu_gb": train.get("peak_gpu_gb"),
        "eval_seconds": metrics.get("eval_seconds"),
        "answers_uri": metrics.get("answers_uri"),  # every greedy answer with its prompt (a judge reads them)
    }


def _metric_columns(metrics: dict) -> dict:
    """The row metrics' values (registry order); the run's language beside the metric named for it (fidelity)."""
    language = metrics.get("language") or {}
    columns = {}
    for metric in metric_registry.row_metrics():
        columns[metric.key] = metrics.get(metric.key)
        if metric.language_label:
            columns.update(language=language.get("code"), language_name=language.get("name"))
    return columns


def _runtime_record(train: dict, metrics: dict) -> dict | None:
    """The runtime decision of the task (training's, else evaluation's) plus where evaluation really ran."""
    record = dict(train.get("runtime") or metrics.get("runtime") or {}) or None
    if record and metrics.get("runtime"):
        record.update(
            {
                k: metrics["runtime"][k]
                for k in ("evaluated_on", "evaluated_dtype", "evaluated_attention", "gpu_lease")
                if k in metrics["runtime"]
            }
        )
    return record


def _describe_lora(lora: dict | None) -> str | None:
    if not lora:
        return None
    targets = lora["targets"] if isinstance(lora["targets"], str) else ",".join(lora["targets"])
    return f"r={lora['r']} α={lora['alpha']} {targets}"


def paired_with_release(
    mine: dict, last: dict | None, primary: str, eval_fingerprint: str | None, policy: Policy
) -> dict | None:
    """{'run_id', 'ci', 'p'} for this candidate − its last release on the primary metric, rows resampled together.

    None unless the release was measured on the same held-out data (same eval
    fingerprint) and its per-row numbers were read back (history.last_releases).
    """
    theirs = (last or {}).get("per_row") or {}
    if (
        not last
        or last.get("eval_fingerprint") != eval_fingerprint
        or not theirs.get("heldout")
        or not mine.get("heldout")
    ):
        return None
    found = (stats.paired(mine["heldout"], theirs["heldout"], **stats.bootstrap_settings(policy)) or {}).get(primary)
    return {"run_id": last["run_id"], **found} if found else None


def versus_last_release(row: dict, last: dict | None, primary: str, eval_fingerprint: str | None) -> tuple[bool, str]:
    """(passes, reason) for 'must beat the last release of the same name'.

    With the release's per-row numbers (`row["vs_last_release"]`, see
    `paired_with_release`) it passes only when the paired interval of the
    primary lies wholly on the good side of zero: a retrain that is not clearly
    better than what users already have is not released again. A release that
    kept no per-row numbers is compared on the point estimate, and the reason says so.
    """
    if not last:
        return True, "no earlier release of this model ✓"
    where = f"release of {last['date']} (run {last['run_id']})"
    if last.get("eval_fingerprint") != eval_fingerprint:
        return True, f"not compared with the {where}: it was measured on other held-out data"
    if last.get(primary) is None or row.get(primary) is None:
        return True, f"not compared with the {where}: it has no {primary} (measured before that metric existed)"
    delta = row[primary] - last[primary]
    mine, theirs = format_value(primary, row[primary]), format_value(primary, last[primary])
    head = f"{metric_registry.label(primary)} {mine} vs {theirs}: {format_value(primary, delta, True)}"
    paired = row.get("vs_last_release") or {}
    if not paired.get("ci"):
        better = _gain(primary, delta) > 0
        return better, (
            f"{'beats' if better else 'does not beat'} the {where}: {head}, point estimate only "
            f"(that release kept no per-row numbers) {'✓' if better else '✗'}"
        )
    head += f"{format_interval(primary, paired['ci'], True)}, {format_p(paired['p'])}"
    clear = min(_gain(primary, paired["ci"][0]), _gain(primary, paired["ci"][1])) > 0
    if not clear:
        return False, f"does not clearly beat the {where}: {head} ✗"
    return True, f"beats the {where}: {head} ✓"


def _difference(row: dict, base: dict, metric: str) -> float | None:
    """Candidate minus base on a metric; None unless both have it."""
    if row.get(metric) is None or base.get(metric) is None:
        return None
    return row[metric] - base[metric]


def _gain(metric: str, value: float) -> float:
    """A difference turned into a gain: positive when it goes the good way."""
    return value if metric_registry.higher_is_better(metric) else -value


def versus_base(row: dict, base: dict, policy: Policy) -> tuple[bool, str]:
    """(passes, reason) for 'improves on its base' on the primary metric.

    It passes when the paired interval lies wholly on the good side of zero
    and the gain reaches `min_gain` (judged on the point estimate, or with
    thresholds_on = "bound" on the interval's conservative end). Without
    per-row data (no interval) the point estimate decides, and the reason says so.
    """
    metric, need = policy.primary, policy.min_gain
    delta = _difference(row, base, metric)
    interval, p = row.get(f"delta_{metric}_ci"), row.get(f"delta_{metric}_p")
    mine, theirs = format_value(metric, row.get(metric)), format_value(metric, base.get(metric))
    head = f"{metric_registry.label(metric)} {mine} vs base {theirs}: {format_value(metric, delta, True)}"
    higher = metric_registry.higher_is_better(metric)
    needed = format_value(metric, need if higher else -need, True)
    asks = f" (needs {'≥' if higher else '≤'} {needed})" if need else ""
    if delta is None:
        return False, f"{head}: not measured for both ✗"
    if not interval:
        ok = _gain(metric, delta) >= need
        return ok, f"{head}{asks}, point estimate only (no paired per-row data) {'✓' if ok else '✗'}"
    worst = min(_gain(metric, interval[0]), _gain(metric, interval[1]))
    head += f"{format_interval(metric, interval, True)}, {format_p(p)}"
    if worst <= 0:
        return False, f"{head}: not a clear gain ✗"
    judged = worst if policy.thresholds_on == "bound" else _gain(metric, delta)
    if judged < need:
        which = "its bound" if policy.thresholds_on == "bound" else "a clear gain but"
        return False, f"{head}: {which} smaller than the {needed} needed ✗"
    return True, f"{head}{asks} ✓"


def _judged(point: float, interval, metric: str, policy: Policy, end: int, delta: bool = False) -> tuple[float, str]:
    """(value a threshold is checked on, how to say so): the point estimate, or with thresholds_on = "bound"
    the interval's end `end` (0 low, 1 high) where there is an interval."""
    if policy.thresholds_on != "bound" or not interval:
        return point, ""
    side = "lower" if end == 0 else "upper"
    return interval[end], f"; judged on the {side} bound {format_value(metric, interval[end], delta)}"


def threshold_reasons(row: dict, base: dict, policy: Policy) -> list[tuple[bool, str]]:
    """(passes, reason) for the chrF++ drop, language fidelity (`fidelity_reason`) and degenerate-rate thresholds."""
    drop, delta = policy.max_chrf_drop, _difference(row, base, "chrf")
    value, note = _judged(delta, row.get("delta_chrf_ci"), "chrf", policy, 0, delta=True)
    ok = value >= -drop
    chrf = (
        f"chrF++ {row['chrf']:.1f} vs base {base['chrf']:.1f} ({delta:+.1f}"
        f"{format_interval('chrf', row.get('delta_chrf_ci'), True)}; may drop ≤ {drop}{note}) {'✓' if ok else '✗'}"
    )
    checks = [(ok, chrf), fidelity_reason(row, policy)]
    value, note = _judged(row["degenerate_rate"], row.get("degenerate_rate_ci"), "degenerate_rate", policy, 1)
    ok = value <= policy.max_degenerate_rate
    checks.append(
        (
            ok,
            f"degenerate answers {row['degenerate_rate']:.0%}"
            f"{format_interval('degenerate_rate', row.get('degenerate_rate_ci'))} "
            f"(may be ≤ {policy.max_degenerate_rate:.0%}{note}) {'✓' if ok else '✗'}",
        )
    )
    return checks


def fidelity_reason(row: dict, policy: Policy) -> tuple[bool, str]:
    """(passes, reason) for the language check: fidelity (among the answers long enough to tell) reaches
    min_fidelity, and the share too short to tell stays within max_undetermined_rate. A model answering in a
    word or two is not let through on the answers nobody could judge: with none judged there is no fidelity
    and the check fails, unless min_fidelity is 0 (the language is not gated). Rows from before the
    undetermined share was counted are read as having none."""
    share = row.get("undetermined_rate")
    interval = row.get("undetermined_rate_ci")
    short, short_note = _judged(share or 0.0, interval, "undetermined_rate", policy, 1)
    short_ok = short <= policy.max_undetermined_rate
    told = ""
    if share:
        told = (
            f"; {format_value('undetermined_rate', share)}{format_interval('undetermined_rate', interval)} "
            f"too short to tell (may be ≤ {policy.max_undetermined_rate:.0%}{short_note})"
        )
    if row.get("fidelity") is None:
        ok = policy.min_fidelity <= 0 and short_ok
        return ok, f"{fidelity_label(row)}: no answer long enough to tell its language{told} {'✓' if ok else '✗'}"
    value, note = _judged(row["fidelity"], row.get("fidelity_ci"), "fidelity", policy, 0)
    ok = value >= policy.min_fidelity and short_ok
    return ok, (
        f"{fidelity_label(row)} {row['fidelity']:.0%}"
        f"{format_interval('fidelity', row.get('fidelity_ci'))} "
        f"(needs ≥ {policy.min_fidelity:.0%}{note}){told} {'✓' if ok else '✗'}"
    )


def decide(
    row: dict, base: dict | None, policy: Policy, last: dict | None = None, eval_fingerprint: str | None = None
) -> tuple[str, list[str]]:
    """('release' | 'hold' | 'failed', reasons) for one candidate row (its intervals already added by `build`)."""
    if row["status"] != "ok":
        return "failed", [f"failed: {row['error'] or 'no metrics'}"]
    if not base or base["status"] != "ok":
        return "hold", ["untuned base has no metrics to compare against"]
    if row.get("stopped") == "fail_fast":  # it stopped training early for not beating its base on dev
        return "hold", [row["stop_reason"]]
    judged_primary = policy.primary in JUDGE_DIRECTION
    checks = [
        judge_versus_base(row, policy) if judged_primary else versus_base(row, base, policy),
        *threshold_reasons(row, base, policy),
        *benchmark_reasons(row, policy),
        *judge_reasons(row, policy),
    ]
    if policy.must_beat_last_release and judged_primary:
        checks.append(judge_versus_release(row, last, policy.primary))
    elif policy.must_beat_last_release:
        checks.append(versus_last_release(row, last, policy.primary, eval_fingerprint))
    return ("release" if all(ok for ok, _ in checks) else "hold"), [reason for _, reason in checks]


def loss_curves(results: list[dict]) -> dict[str, list[dict]]:
    """Training loss curve of every candidate that trained, by name."""
    return {r["item"]["name"]: r["train"]["loss_curve"] for r in results if r["train"]}


def samples(results: list[dict]) -> dict[str, list[dict]]:
    """Sample answers of every evaluated model, by name."""
    return {r["item"]["name"]: r["metrics"]["samples"] for r in results if r["metrics"]}


def _per_row(result: dict) -> dict:
    """The per-row numbers a task's evaluation returned ({'heldout': …, 'extra_sets': {…}}), or {}."""
    return (result.get("metrics") or {}).get("per_row") or {}


def add_benchmark_deltas(row: dict, base: dict | None, mine: dict, theirs: dict, policy: Policy) -> None:
    """Per benchmark of a candidate: `base_<m>`, `delta_<m>`, and the paired `delta_<m>_ci` / `delta_<m>_p`
    (items resampled together), as for the held-out metrics."""
    for name, scores in row["benchmarks"].items():
        theirs_scores = ((base or {}).get("benchmarks") or {}).get(name) or {}
        rows_a, rows_b = (mine.get("benchmarks") or {}).get(name), (theirs.get("benchmarks") or {}).get(name)
        found = (stats.paired(rows_a, rows_b, **stats.bootstrap_settings(policy)) or {}) if rows_a and rows_b else {}
        for metric in [m.key for m in metric_registry.by_group("benchmark") if m.key in scores]:
            scores[f"base_{metric}"] = theirs_scores.get(metric)
            both = scores[metric] is not None and scores[f"base_{metric}"] is not None
            scores[f"delta_{metric}"] = round(scores[metric] - scores[f"base_{metric}"], 5) if both else None
            scores[f"delta_{metric}_ci"] = (found.get(metric) or {}).get("ci")
            scores[f"delta_{metric}_p"] = (found.get(metric) or {}).get("p")


def benchmark_reasons(row: dict, policy: Policy) -> list[tuple[bool, str]]:
    """(passes, reason) per policy `must_not_lose` entry ('belebele.accuracy'): it fails only when the paired
    interval of the change lies wholly on the losing side of zero (a loss beyond the interval's noise)."""
    checks = []
    for entry in (e for e in policy.must_not_lose if e not in JUDGE_DIRECTION):
        name, _, metric = entry.rpartition(".")
        scores = (row.get("benchmarks") or {}).get(name) or {}
        if scores.get(f"delta_{metric}") is None:
            checks.append((False, f"{entry}: not measured for this model and its base ✗"))
            continue
        delta, interval = scores[f"delta_{metric}"], scores.get(f"delta_{metric}_ci")
        lost = interval is not None and max(_gain(metric, interval[0]), _gain(metric, interval[1])) < 0
        where = f"{format_value(metric, delta, True)}{format_interval(metric, interval, True)}"
        if interval is None:
            lost = _gain(metric, delta) < 0
            where += ", point estimate only"
        p = scores.get(f"delta_{metric}_p")
        where += f", {format_p(p)}" if p is not None else ""
        values = f"{format_value(metric, scores[metric])} vs base {format_value(metric, scores[f'base_{metric}'])}"
        verdict = "a clear loss ✗" if lost else "no clear loss ✓"
        checks.append((not lost, f"{entry} {values}: {where}: {verdict}"))
    return checks


# --------------------------------------------------------------------------- the judge's win rates in the policy

TIE = 0.5  # a model's win rate against itself: the line a judged candidate is measured from


def _judge_head(row: dict, metric: str) -> str:
    """'judge's win rate against the base 62% [55%, 70%], p = 0.01 (12 pairs)'."""
    interval, p = row.get(f"{metric}_ci"), row.get(f"{metric}_p")
    against = metric.rpartition("_vs_")[2]
    return (
        f"{metric_registry.label(metric)} {format_value(metric, row[metric])}{format_interval(metric, interval)}"
        + (f", {format_p(p)}" if p is not None else "")
        + f" ({row.get(f'judge.pairs_vs_{against}')} pairs, ties half)"
    )


def _judge_interval(row: dict, metric: str) -> list[float]:
    """A judged rate's interval; the point itself where it has none (rows written before intervals were)."""
    return row.get(f"{metric}_ci") or [row[metric]] * 2


def _not_judged(row: dict, against: str) -> str:
    """Why a row has no win rate against `against`."""
    if not row.get("judge.model"):
        return "not judged (the judge reads the top_k candidates only, or this one kept no answers)"
    if row.get(f"judge.pairs_vs_{against}") is None:
        return f"not judged against the {against} (no answers of it on this held-out set)"
    return f"no verdict of the judge could be read ({row.get('judge.unparsed')} unparsed)"


def judge_versus_base(row: dict, policy: Policy) -> tuple[bool, str]:
    """(passes, reason) for 'improves on its base' when the policy ranks on a judge's win rate against the base:
    its interval lies wholly above a tie and the rate clears it by `min_gain` (the point estimate, or with
    thresholds_on = "bound" the interval's lower end)."""
    metric, need = policy.primary, policy.min_gain
    if row.get(metric) is None:
        return False, f"{metric_registry.label(metric)}: {_not_judged(row, 'base')} ✗"
    head, interval = _judge_head(row, metric), _judge_interval(row, metric)
    if interval[0] <= TIE:
        return False, f"{head}: not clearly preferred to the base's answers ✗"
    judged = interval[0] if policy.thresholds_on == "bound" else row[metric]
    needed = format_value(metric, TIE + need)
    if judged - TIE < need:
        return False, f"{head}: preferred, but {'its lower bound is ' if judged != row[metric] else ''}below {needed} ✗"
    return True, f"{head} (needs ≥ {needed}) ✓"


def judge_versus_release(row: dict, last: dict | None, primary: str) -> tuple[bool, str]:
    """(passes, reason) for 'must beat the last release' when the policy ranks on a judge's win rate: the rate
    against that release's answers lies wholly above a tie; not compared where its answers on this held-out set
    were not kept (as with a metric the release was not measured on)."""
    if not last:
        return True, "no earlier release of this model ✓"
    where = f"release of {last['date']} (run {last['run_id']})"
    metric = primary.replace("_vs_base", "_vs_release")
    if row.get(metric) is None:
        return True, f"not compared with the {where}: {_not_judged(row, 'release')}"
    head, interval = _judge_head(row, metric), _judge_interval(row, metric)
    if interval[0] <= TIE:
        return False, f"does not clearly beat the {where}: {head} ✗"
    return True, f"beats the {where}: {head} ✓"


def judge_reasons(row: dict, policy: Policy) -> list[tuple[bool, str]]:
    """(passes, reason) per judge win rate in `must_not_lose`: it fails when its interval lies wholly below a tie
    (the judge clearly prefers the other model's answers) or the candidate was not judged; a rate against the last
    release passes where there is none to judge against."""
    checks = []
    for metric in (e for e in policy.must_not_lose if e in JUDGE_DIRECTION):
        against = metric.rpartition("_vs_")[2]
        if row.get(metric) is None:
            none = against == "release" and row.get("judge.model") and row.get("judge.pairs_vs_release") is None
            reason = "no earlier release judged on this held-out set ✓" if none else f"{_not_judged(row, against)} ✗"
            checks.append((bool(none), f"{metric}: {reason}"))
            continue
        interval = _judge_interval(row, metric)
        lost = interval[1] < TIE
        checks.append((not lost, f"{_judge_head(row, metric)}: {'a clear loss ✗' if lost else 'no clear loss ✓'}"))
    return checks


def _rank_key(primary: str):
    """Best first on the primary metric; a row without it last."""
    sign = -1 if metric_registry.higher_is_better(primary) else 1
    return lambda r: (r.get(primary) is None, 0 if r.get(primary) is None else sign * r[primary])


def build(
    results: list[dict],
    policy: Policy | None = None,
    last_releases: dict | None = None,
    eval_fingerprint: str | None = None,
    per_row_uris: dict | None = None,
    judged: dict | None = None,
) -> list[dict]:
    """Rows for every task result: ranked candidates, then baselines, then failures.

    `judged` ({candidate name: its `judge.*` fields}, judge/of_run.py) go into the rows before any decision.

    Each row gets bootstrap intervals from its task's per-row numbers, each
    candidate paired intervals and p-values against its base. `last_releases`
    ({name: row of its last release with its per-row numbers}, see history.py)
    and the eval fingerprint of this run feed the policy's must-beat-the-last-
    release check, paired too where that release kept its per-row numbers.
    `per_row_uris` ({name: file}, history.save_per_row) go into the rows so a
    later run can pair against this one.
    """
    policy = policy or Policy()  # checked when it was built: a profile's, or the defaults
    primary = policy.primary
    rows = [base_row(r) | (judged or {}).get(r["item"]["name"], {}) for r in results]
    per_row = {r["item"]["name"]: _per_row(r) for r in results}
    bases = {r["name"]: r for r in rows if r["kind"] == "baseline"}
    for row in rows:
        stats.add_intervals(row, per_row[row["name"]], policy)
    for row in rows:
        base = bases.get(row["base"]) if row["kind"] == "candidate" else None
        for metric in (m.key for m in metric_registry.row_metrics()):
            row[f"base_{metric}"] = base.get(metric) if base else None
            both = row[metric] is not None and row[f"base_{metric}"] is not None
            row[f"delta_{metric}"] = round(row[metric] - row[f"base_{metric}"], 5) if both else None
        stats.add_paired(row, per_row[row["name"]], per_row[base["name"]] if base else {}, policy)
        add_benchmark_deltas(row, base, per_row[row["name"]], per_row[base["name"]] if base else {}, policy)
        last = (last_releases or {}).get(row["name"])
        row["per_row_uri"] = (per_row_uris or {}).get(row["name"])
        row["vs_last_release"] = (
            paired_with_release(per_row[row["name"]], last, primary, eval_fingerprint, policy)
            if row["kind"] == "candidate"
            else None
        )
        if row["kind"] == "baseline":
            row["decision"] = "baseline" if row["status"] == "ok" else "failed"
            row["reasons"] = (
                ["untuned base: the row its candidates must beat"]
                if row["status"] == "ok"
                else [f"failed: {row['error']}"]
            )
        else:
            row["decision"], row["reasons"] = decide(row, base, policy, last, eval_fingerprint)
    ranked = sorted((r for r in rows if r["kind"] == "candidate" and r["status"] == "ok"), key=_rank_key(primary))
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    order = {"candidate": 0, "baseline": 1}
    for row in rows:
        row.setdefault("rank", None)
    return sorted(rows, key=lambda r: (r["status"] != "ok", order[r["kind"]], r["rank"] or 0, r["name"]))
