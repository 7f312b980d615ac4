"""Leaderboard rows and release decisions: pure functions over plain dicts.

Rows are JSON-able so the card, the CLI and later the release step read the
same data. Each candidate row carries its decision and the reasons for it,
worded for a person.
"""

from __future__ import annotations

# metric -> True when higher is better
DIRECTION = {"eval_loss": False, "perplexity": False, "chrf": True, "bleu": True, "az_fidelity": True,
             "degenerate_rate": False}
COMPARED = ("eval_loss", "perplexity", "chrf", "bleu", "az_fidelity", "degenerate_rate", "fertility")  # base / delta
DEFAULT_POLICY = {"primary": "eval_loss", "min_loss_improvement": 0.02, "max_chrf_drop": 2.0,
                  "min_fidelity": 0.9, "max_degenerate_rate": 0.2, "must_beat_last_release": True}


def format_cell(value, signed: bool = False) -> str:
    """How a row value reads in a table (card or console): 3 decimals, '–' for missing."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.3f}" if signed or value < 0 else f"{value:.3f}"
    return str(value)


def row_cell(row: dict, key: str) -> str:
    """One leaderboard cell as text; deltas always carry their sign."""
    return format_cell(row.get(key), signed=key.startswith("delta_"))


def task_result(item: dict, train: dict | None, metrics: dict | None, *failures, stage: str = "") -> dict:
    """One work item's outcome; the first caught failure (with the stage it hit) becomes its error text."""
    error = next((_failure_text(f) for f in failures if f), None)
    if error and stage:
        error = f"{stage} failed: {error}"
    return {"item": item, "train": train, "metrics": metrics, "error": error}


def gather(tasks) -> list[dict]:
    """Results of one foreach (Metaflow join inputs, or anything with the same attributes); idle items left out."""
    return [task_result(t.item, t.train, t.metrics, t.failure, stage=t.stage)
            for t in tasks if t.item["kind"] != "idle"]


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
        "eval_loss": metrics.get("eval_loss"),
        "perplexity": metrics.get("perplexity"),
        "chrf": metrics.get("chrf"),
        "bleu": metrics.get("bleu"),
        "az_fidelity": metrics.get("az_fidelity"),
        "degenerate_rate": metrics.get("degenerate_rate"),
        "fertility": metrics.get("fertility"),
        "custom": metrics.get("custom") or {},
        "extra_sets": metrics.get("extra_sets") or {},
        "train_seconds": train.get("train_seconds"),
        "tokens_per_second": train.get("tokens_per_second"),
        "steps": train.get("steps"),
        "adapter_uri": train.get("adapter_uri"),
        # how it ran: device, weight dtype, compute precision, attention, quantisation, checkpointing
        "runtime": _runtime_record(train, metrics),
        "peak_gpu_gb": train.get("peak_gpu_gb"),
        "eval_seconds": metrics.get("eval_seconds"),
    }


def _runtime_record(train: dict, metrics: dict) -> dict | None:
    """The runtime decision of the task (training's, else evaluation's) plus where evaluation really ran."""
    record = dict(train.get("runtime") or metrics.get("runtime") or {}) or None
    if record and metrics.get("runtime"):
        record.update({k: metrics["runtime"][k] for k in ("evaluated_on", "evaluated_dtype") if k in metrics["runtime"]})
    return record


def _describe_lora(lora: dict | None) -> str | None:
    if not lora:
        return None
    targets = lora["targets"] if isinstance(lora["targets"], str) else ",".join(lora["targets"])
    return f"r={lora['r']} α={lora['alpha']} {targets}"


def versus_last_release(row: dict, last: dict | None, primary: str, eval_fingerprint: str | None) -> tuple[bool, str]:
    """(passes, reason) for 'must beat the last release of the same name'."""
    if not last:
        return True, "no earlier release of this model ✓"
    where = f"release of {last['date']} (run {last['run_id']})"
    if last.get("eval_fingerprint") != eval_fingerprint or last.get(primary) is None:
        return True, f"not compared with the {where}: it was measured on other held-out data"
    better = row[primary] > last[primary] if DIRECTION[primary] else row[primary] < last[primary]
    verb = "beats" if better else "does not beat"
    return better, f"{verb} the {where}: {primary} {row[primary]:.3f} vs {last[primary]:.3f} {'✓' if better else '✗'}"


def decide(row: dict, base: dict | None, policy: dict, last: dict | None = None,
           eval_fingerprint: str | None = None) -> tuple[str, list[str]]:
    """('release' | 'hold' | 'failed', reasons) for one candidate row."""
    if row["status"] != "ok":
        return "failed", [f"failed: {row['error'] or 'no metrics'}"]
    if not base or base["status"] != "ok":
        return "hold", ["untuned base has no metrics to compare against"]
    reasons, passed = [], True
    gain = base["eval_loss"] - row["eval_loss"]
    need = policy["min_loss_improvement"]
    ok = gain >= need
    passed &= ok
    reasons.append(
        f"held-out loss {row['eval_loss']:.3f} vs base {base['eval_loss']:.3f} "
        f"({-gain:+.3f}; needs ≤ {-need:+.3f}) {'✓' if ok else '✗'}"
    )
    delta = row["chrf"] - base["chrf"]
    ok = delta >= -policy["max_chrf_drop"]
    passed &= ok
    reasons.append(f"chrF++ {row['chrf']:.1f} vs base {base['chrf']:.1f} ({delta:+.1f}; may drop ≤ {policy['max_chrf_drop']}) {'✓' if ok else '✗'}")
    ok = row["az_fidelity"] >= policy["min_fidelity"]
    passed &= ok
    reasons.append(f"Azerbaijani answers {row['az_fidelity']:.0%} (needs ≥ {policy['min_fidelity']:.0%}) {'✓' if ok else '✗'}")
    ok = row["degenerate_rate"] <= policy["max_degenerate_rate"]
    passed &= ok
    reasons.append(f"degenerate answers {row['degenerate_rate']:.0%} (may be ≤ {policy['max_degenerate_rate']:.0%}) {'✓' if ok else '✗'}")
    if policy.get("must_beat_last_release"):
        ok, reason = versus_last_release(row, last, policy["primary"], eval_fingerprint)
        passed &= ok
        reasons.append(reason)
    return ("release" if passed else "hold"), reasons


def loss_curves(results: list[dict]) -> dict[str, list[dict]]:
    """Training loss curve of every candidate that trained, by name."""
    return {r["item"]["name"]: r["train"]["loss_curve"] for r in results if r["train"]}


def samples(results: list[dict]) -> dict[str, list[dict]]:
    """Sample answers of every evaluated model, by name."""
    return {r["item"]["name"]: r["metrics"]["samples"] for r in results if r["metrics"]}


def build(results: list[dict], policy: dict | None = None, last_releases: dict | None = None,
          eval_fingerprint: str | None = None) -> list[dict]:
    """Rows for every task result: ranked candidates, then baselines, then failures.

    `last_releases` ({name: row of its last release}, see history.py) and the
    eval fingerprint of this run feed the policy's must-beat-the-last-release check.
    """
    policy = {**DEFAULT_POLICY, **(policy or {})}
    primary = policy["primary"]
    if primary not in DIRECTION:
        raise ValueError(f"policy.primary must be one of {', '.join(DIRECTION)}, got {primary!r}")
    rows = [base_row(r) for r in results]
    bases = {r["name"]: r for r in rows if r["kind"] == "baseline"}
    for row in rows:
        base = bases.get(row["base"]) if row["kind"] == "candidate" else None
        for metric in COMPARED:
            row[f"base_{metric}"] = base.get(metric) if base else None
            both = row[metric] is not None and row[f"base_{metric}"] is not None
            row[f"delta_{metric}"] = round(row[metric] - row[f"base_{metric}"], 5) if both else None
        if row["kind"] == "baseline":
            row["decision"] = "baseline" if row["status"] == "ok" else "failed"
            row["reasons"] = ["untuned base: the row its candidates must beat"] if row["status"] == "ok" else [f"failed: {row['error']}"]
        else:
            row["decision"], row["reasons"] = decide(row, base, policy, (last_releases or {}).get(row["name"]),
                                                     eval_fingerprint)
    ranked = sorted(
        (r for r in rows if r["kind"] == "candidate" and r["status"] == "ok"),
        key=lambda r: r[primary], reverse=DIRECTION[primary],
    )
    for position, row in enumerate(ranked, start=1):
        row["rank"] = position
    order = {"candidate": 0, "baseline": 1}
    for row in rows:
        row.setdefault("rank", None)
    return sorted(rows, key=lambda r: (r["status"] != "ok", order[r["kind"]], r["rank"] or 0, r["name"]))
