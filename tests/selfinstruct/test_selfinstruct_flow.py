"""`python flows/selfinstruct_flow.py run --teacher URL --teacher-model NAME --target N --out FILE` against a scripted
OpenAI-compatible teacher, then `finetune_flow.py --train-data bundled,FILE` on what it wrote."""

import json
import os

import pytest
from conftest import ROOT
from metaflow import Runner
from test_procedure import SETTINGS, script_teacher

from barbarossa.data import instructions
from barbarossa.selfinstruct.filters import RULES

pytestmark = pytest.mark.flow
FLOW = str(ROOT / "flows" / "selfinstruct_flow.py")
FINETUNE = str(ROOT / "flows" / "finetune_flow.py")


def generate(server, out, root):
    runner = Runner(FLOW, show_output=False, env=dict(os.environ))
    params = {"teacher": server.url, "teacher_model": "scripted-model", "target": SETTINGS.target}
    with runner.run(**params, budget=SETTINGS.request_budget, out=str(out), output_root=str(root)) as running:
        assert running.status == "successful", running.run["start"].task.stderr if running.run else running.status
        return running.run


def test_the_flow_keeps_tasks_that_train_rejects_the_rest_with_a_rule_and_a_rerun_asks_nothing(scripted_llm, tmp_path):
    script_teacher(scripted_llm)
    out = tmp_path / "gen.jsonl"
    run = generate(scripted_llm, out, tmp_path / "runs")
    kept = instructions.load(str(out)).records
    assert len(kept) == run.data.written["rows"] >= SETTINGS.target
    rejected = [json.loads(line) for line in (tmp_path / "gen.rejected.jsonl").read_text().splitlines()]
    assert {row["rule"] for row in rejected} == set(RULES)
    provenance = json.loads((tmp_path / "gen.provenance.json").read_text())
    assert provenance["teacher"]["model"] == "scripted-model" and provenance["usage"]["cached"] == 0
    asked = len(scripted_llm.posts())
    assert asked == provenance["usage"]["requests"] and len(list(run["generate"].tasks())) == 1
    again = generate(scripted_llm, tmp_path / "again.jsonl", tmp_path / "runs")  # same output root: same cache
    assert len(scripted_llm.posts()) == asked and again.data.usage["cached"] == asked
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()

    runner = Runner(FINETUNE, show_output=False, env=dict(os.environ))
    mix = f"bundled,{out}"
    with runner.run(
        models="tiny-llama-lora", profile="smoke", train_data=mix, output_root=str(tmp_path / "ft")
    ) as running:
        assert running.status == "successful", running.status
        data = running.run.data.data
    assert [m["rows"] for m in data["train_mix"]][1] == len(kept)  # the generated rows trained, beside the sample
