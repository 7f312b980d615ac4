"""Earlier runs of the flow, read through the Metaflow Client API: what was released last, and how good it was;
what `barbarossa leaderboard --compare` and `barbarossa chat` read of a run.

"Must beat the last release" only means something when both were measured on
the same held-out data, so each entry carries the eval fingerprint of its run.
"""

from __future__ import annotations

import json
import warnings

from barbarossa import config, storage
from barbarossa.decide import legacy

MAX_RUNS = 50  # newest runs looked at; older releases are superseded by newer ones anyway


def last_releases(flow_name: str, current_run_id: str, names: set[str], tag: str | None = None) -> dict[str, dict]:
    """{model name: its row from the newest earlier successful run that released it, plus run id, date,
    eval fingerprint}.

    Uses the Client's current namespace (the user's for local runs, the
    deployment's production namespace when scheduled) and, with `tag`, only runs
    carrying it (the flow's `project_branch:<branch>` tag, so a test branch never
    competes with production).
    """
    from metaflow import Flow
    from metaflow.exception import MetaflowNotFound

    found: dict[str, dict] = {}
    try:
        runs = Flow(flow_name).runs(*([tag] if tag else []))
    except MetaflowNotFound:
        return found
    for count, run in enumerate(runs):
        if count >= MAX_RUNS or found.keys() >= names:
            break
        if run.id == str(current_run_id) or not run.successful:
            continue
        rows = [legacy.upgraded(row) for row in getattr(run.data, "leaderboard", None) or []]
        fingerprint = (getattr(run.data, "data", None) or {}).get("eval_fingerprint")
        for row in rows:
            if row["name"] in names and row["name"] not in found and row.get("decision") == "release":
                found[row["name"]] = {
                    **row,
                    "run_id": run.id,
                    "date": run.created_at.strftime("%Y-%m-%d"),
                    "eval_fingerprint": fingerprint,
                    "per_row": load_per_row(row.get("per_row_uri")),
                }
    return found


def save_per_row(results: list[dict], run_root: str) -> dict[str, str]:
    """{name: uri}: each evaluated candidate's per-row eval numbers as <run_root>/<name>/eval_rows.json.

    Small (numbers only, never texts: about 6 KB for 120 rows); what a later run
    pairs against when this one's release is its last release.
    """
    uris = {}
    for result in results:
        per_row = (result.get("metrics") or {}).get("per_row")
        if result["item"]["kind"] == "candidate" and per_row:
            uri = storage.join(run_root, result["item"]["name"], "eval_rows.json")
            uris[result["item"]["name"]] = storage.write_text(uri, json.dumps(per_row, separators=(",", ":")))
    return uris


def load_per_row(uri: str | None) -> dict | None:
    """A release's per-row numbers, or None (with a warning when the file named in its row cannot be read)."""
    if not uri:
        return None
    try:
        return json.loads(storage.read_bytes(uri))
    except Exception as error:
        warnings.warn(
            f"per-row numbers of an earlier release unreadable ({uri}: {error}); "
            "comparing with it on the point estimate",
            stacklevel=2,
        )
        return None


def primary_of(run, default: str) -> str:
    """The metric the run ranked by (its profile's [policy] primary); `default` for a run without settings."""
    settings = getattr(run.data, "settings", None)
    if isinstance(settings, config.Profile):
        return settings.policy.primary
    return legacy.renamed_metric(((settings or {}).get("policy") or {}).get("primary", default))  # a dict: older runs


def run_record(run, default_primary: str) -> dict:
    """What comparing runs needs of one: its rows, its ranking metric and the fingerprints of its data.

    A run from before an artifact existed gets None (or the default ranking metric) rather than an error.
    """
    summary = getattr(run.data, "data", None) or {}
    return {
        "run": run.pathspec,
        "finished_at": str(run.finished_at or ""),
        "primary": primary_of(run, default_primary),
        "eval_fingerprint": summary.get("eval_fingerprint"),
        "train_fingerprint": summary.get("train_fingerprint"),
        "rows": [legacy.upgraded(row) for row in getattr(run.data, "leaderboard", None) or []],
    }


def settings_of(run, item: dict) -> config.Profile:
    """The settings `item` ran with in `run`: the item's own (resolved in start), or for a run from before
    typed settings, its profile dict's [train] / [eval] tables resolved the same way."""
    if isinstance(item.get("settings"), config.Profile):
        return item["settings"]
    recorded = getattr(run.data, "settings", None) or {}
    tables = {}
    for table, cls in (("train", config.Train), ("eval", config.Eval)):
        given = recorded.get(table) or {}  # its metric modules may be gone: chat and reloads do not score
        known = {k: v for k, v in given.items() if k in cls.__dataclass_fields__ and k != "extra_metrics"}
        tables[table] = cls(**known)
    return config.Profile(name=recorded.get("name", "unknown"), **tables).for_item(item)


def run_item(run, name: str) -> dict:
    """The work item (base entry, LoRA recipe) that `run` trained and evaluated as `name`, from its tune task."""
    for step in run:
        if not step.id.startswith("tune_"):
            continue
        for task in step:
            try:
                item = task["item"].data
            except KeyError:  # a task that failed before it recorded its item
                continue
            if item.get("name") == name:
                return item
    raise LookupError(f"{run.pathspec} has no tune task for {name!r} (it was refused before any compute)")
