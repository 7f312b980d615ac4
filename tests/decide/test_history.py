"""'Must beat the last release': earlier runs read back through the Metaflow Client API."""

import os
import textwrap

import pytest
from metaflow import Runner

from barbarossa.config import Policy
from barbarossa.decide import history, leaderboard, legacy

pytestmark = pytest.mark.flow

FLOW = textwrap.dedent('''
    import json
    from metaflow import FlowSpec, Parameter, step

    class ReleaseHistoryFlow(FlowSpec):
        """Stands in for FinetuneFlow: writes the two artifacts history.py reads."""
        rows = Parameter("rows", default="[]")
        fingerprint = Parameter("fingerprint", default="e1")

        @step
        def start(self):
            self.leaderboard = json.loads(self.rows)
            self.data = {"eval_fingerprint": self.fingerprint}
            self.next(self.end)

        @step
        def end(self):
            pass

    if __name__ == "__main__":
        ReleaseHistoryFlow()
''')


def row(name, decision, loss):
    return {"name": name, "decision": decision, "eval_loss": loss, "status": "ok", "kind": "candidate"}


def run(path, rows, fingerprint="e1"):
    import json

    with Runner(str(path), show_output=False, env=dict(os.environ)).run(
        rows=json.dumps(rows), fingerprint=fingerprint
    ) as r:
        assert r.status == "successful"
        return r.run.id


def test_last_release_is_the_newest_earlier_run_that_released_the_model(tmp_path):
    path = tmp_path / "release_history_flow.py"
    path.write_text(FLOW)
    results = [
        {"item": {"name": "a", "kind": "candidate"}, "metrics": {"per_row": {"heldout": {"nll": [1.5, 2.0]}}}},
        {"item": {"name": "a-base", "kind": "baseline"}, "metrics": {"per_row": {"heldout": {"nll": [3.0]}}}},
    ]
    uris = history.save_per_row(results, str(tmp_path / "run-root"))
    assert uris == {"a": str(tmp_path / "run-root" / "a" / "eval_rows.json")}  # candidates only
    b_gone = {**row("b", "release", 2.0), "per_row_uri": str(tmp_path / "deleted.json")}
    run(path, [row("a", "release", 3.0), b_gone])
    newer = run(path, [{**row("a", "release", 2.5), "per_row_uri": uris["a"]}, row("b", "hold", 1.0)], fingerprint="e2")
    current = run(path, [row("a", "release", 9.9)])  # the run asking is never its own history
    with pytest.warns(UserWarning, match="deleted.json"):
        found = history.last_releases("ReleaseHistoryFlow", current, {"a", "b", "c"})
    assert set(found) == {"a", "b"}
    assert found["a"]["eval_loss"] == 2.5 and found["a"]["run_id"] == newer and found["a"]["eval_fingerprint"] == "e2"
    assert found["b"]["eval_loss"] == 2.0 and found["b"]["eval_fingerprint"] == "e1"  # the newer run held b
    assert found["a"]["per_row"] == {"heldout": {"nll": [1.5, 2.0]}} and found["b"]["per_row"] is None
    assert history.last_releases("NoSuchFlowEver", current, {"a"}) == {}


def test_policy_holds_a_candidate_that_does_not_beat_its_last_release():
    policy = Policy(primary="eval_loss", min_fidelity=0.0, max_degenerate_rate=1.0)
    base = {"status": "ok", "eval_loss": 4.0, "chrf": 10.0}
    cand = {"status": "ok", "eval_loss": 3.0, "chrf": 12.0, "fidelity": 1.0, "degenerate_rate": 0.0}
    last = {"eval_loss": 2.9, "date": "2026-11-20", "run_id": "17", "eval_fingerprint": "e1"}
    decision, reasons = leaderboard.decide(cand, base, policy, last, "e1")
    assert decision == "hold" and reasons[-1] == (
        "does not beat the release of 2026-11-20 (run 17): held-out loss 3.000 "
        "vs 2.900: +0.100, point estimate only (that release kept no per-row "
        "numbers) ✗"
    )
    decision, reasons = leaderboard.decide(cand, base, policy, {**last, "eval_loss": 3.2}, "e1")
    assert decision == "release" and reasons[-1].startswith("beats the release of 2026-11-20")
    decision, reasons = leaderboard.decide(cand, base, policy, last, "other-eval-set")
    assert decision == "release" and "measured on other held-out data" in reasons[-1]
    decision, reasons = leaderboard.decide(cand, base, policy.replace(must_beat_last_release=False), last, "e1")
    assert decision == "release" and len(reasons) == 4


def test_a_run_record_carries_rows_ranking_metric_and_fingerprints(tmp_path):
    """What `barbarossa leaderboard --compare` reads of a run; a run without a settings artifact ranks by the
    default."""
    import pytest
    from metaflow import Run

    path = tmp_path / "release_history_flow.py"
    path.write_text(FLOW)
    run_id = run(path, [row("a", "release", 3.0)], fingerprint="e9")
    record = history.run_record(Run(f"ReleaseHistoryFlow/{run_id}"), "eval_loss")
    # rows without a language are from before language packs: read as Azerbaijani runs
    assert record["run"] == f"ReleaseHistoryFlow/{run_id}" and record["rows"] == [
        legacy.upgraded(row("a", "release", 3.0))
    ]
    assert record["rows"][0]["language"] == "az"
    assert (
        record["eval_fingerprint"] == "e9" and record["train_fingerprint"] is None and record["primary"] == "eval_loss"
    )
    with pytest.raises(LookupError, match="no tune task for 'a'"):
        history.run_item(Run(f"ReleaseHistoryFlow/{run_id}"), "a")
