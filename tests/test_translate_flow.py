"""The translation flow end to end on a tiny random seq2seq model: the path, protection, cache and QA run for real.

The translations are nonsense (random weights), so QA must flag them; a second
run over the same input must not call the backend at all.
"""

import json
import os

from metaflow import Runner

from barbarossa import data
from conftest import ROOT

FLOW = str(ROOT / "flows" / "translate_flow.py")
SETTINGS = {"shard_rows": 10, "qa_policy": "flag",
            "backend": {"kind": "local", "folder": "tiny:t5", "source": "", "target": "",
                        "prefix": "translate English to Azerbaijani: ", "max_new_tokens": 12}}


def run(output_root: str):
    runner = Runner(FLOW, show_output=False, env=dict(os.environ), config_value=[("translate", SETTINGS)])
    with runner.run(source="bundled-en", output_root=output_root) as running:
        assert running.status == "successful", running.run["end"].task.stderr if running.run else running.status
        return running.run


def test_translate_flow_writes_a_checked_versioned_dataset_and_reuses_its_cache(tmp_path):
    english = data.load("bundled-en").records
    first = run(str(tmp_path / "out"))
    stats, counts, dataset = first.data.stats, first.data.qa_counts, first.data.dataset
    assert len(list(first["translate"].tasks())) == 3  # 23 rows in shards of 10
    assert stats["rows"] == len(english) and stats["backend_calls"] > 0 and stats["cache_hits"] == 0
    assert counts["rows"] == len(english) and counts["flagged"] >= len(english) - counts["verbatim"] - 2
    assert counts["verbatim"] == 1 and counts["published"] == len(english) - counts["unusable"]  # "flag" keeps the rest
    published = [json.loads(line) for line in open(dataset["uri"], encoding="utf-8")]
    verbatim = next(r for r in published if r["instruction"] == "`ls -la`")
    assert verbatim == {"instruction": "`ls -la`", "input": "", "output": "```\ntotal 0\n```"}
    assert all("qa" in r for r in published if r is not verbatim) and len(published) == counts["published"]
    assert dataset["uri"].endswith(f"/datasets/{dataset['fingerprint']}/az_alpaca.jsonl")
    card = open(dataset["uri"].replace("az_alpaca.jsonl", "README.md"), encoding="utf-8").read()
    assert card.startswith("---\nlanguage:\n- az") and f"{counts['flagged']} flagged" in card
    assert data.load(dataset["uri"]).records  # the fine-tune flow can read it as training data

    second = run(str(tmp_path / "out"))
    assert second.data.stats["backend_calls"] == 0
    assert second.data.stats["cache_hits"] == stats["cache_misses"] and second.data.stats["cache_misses"] == 0
    assert second.data.dataset == dataset  # same input, same cache: the same dataset version
