"""Shims for runs made before language packs, which named the fidelity metric `az_fidelity` (in their rows, their
extra sets and as a profile's [policy] primary): read back in today's keys, so the CLI, `--compare`, the
last-release check and the policy treat old and new runs alike. Today's runs write today's keys and pass through
unchanged; nothing here is needed for them.
"""

from __future__ import annotations

from barbarossa.config import RENAMED_METRICS


def upgraded(row: dict) -> dict:
    """A leaderboard row of any earlier run in today's keys: `az_fidelity` (and its base / delta / interval keys,
    in extra sets too) read as `fidelity` of an Azerbaijani run. Today's rows come back unchanged."""
    if "language" in row:
        return row
    row = _renamed_keys(row)
    row["extra_sets"] = {name: _renamed_keys(scores) for name, scores in (row.get("extra_sets") or {}).items()}
    return {**row, "language": "az", "language_name": "Azerbaijani"}


def _renamed_keys(values: dict) -> dict:
    """The dict with every old metric name inside a key replaced (`delta_az_fidelity_p` → `delta_fidelity_p`)."""
    out = {}
    for key, value in values.items():
        for old, new in RENAMED_METRICS.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def renamed_metric(name: str) -> str:
    """Today's name of a metric an earlier profile or run named (`az_fidelity` → `fidelity`); others unchanged."""
    return RENAMED_METRICS.get(name, name)
