"""The self-instruct flow with a real teacher: llama.cpp's server (xllamacpp) over SmolLM2-135M-Instruct, one thread.

A 135M model writes no Azerbaijani worth keeping, so the run asks in English through a small English pack
written here (the pack's own sample as seeds, no benchmarks): the plumbing is tested — requests, stop strings,
the length cut-off, parsing, every block kept or rejected once, the files — not what the teacher writes.
"""

import json
import os
import re

import pytest
from conftest import ROOT
from metaflow import Runner

from barbarossa import languages, llm
from barbarossa.data import instructions
from barbarossa.selfinstruct.filters import RULES

pytestmark = [pytest.mark.flow, pytest.mark.server]
FLOW = str(ROOT / "flows" / "selfinstruct_flow.py")


@pytest.fixture
def english_pack(tmp_path, monkeypatch):
    """The az pack turned English: its prompt asks for English tasks, English is the language kept."""
    text = (languages.languages_dir() / "az.toml").read_text(encoding="utf-8")
    text = text.replace('code = "az"', 'code = "en"').replace('"Azerbaijani"', '"English"')
    text = text.replace("data/az_alpaca_sample.jsonl", "data/en_alpaca_sample.jsonl")
    text = text.replace('target = "AZERBAIJANI"', 'target = "ENGLISH"').replace('"ENGLISH", "RUSSIAN"', '"RUSSIAN"')
    text = re.sub(r"in Azerbaijani[^.\n]*", "in English", text)
    text = re.sub(r"\nsets = \[.*?\n\]\n", "\nsets = []\n", text, flags=re.S)
    folder = tmp_path / "languages"
    folder.mkdir()
    (folder / "en.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("BARBAROSSA_LANGUAGES", str(folder))
    assert languages.load("en")["identify"]["target"] == "ENGLISH"


def test_a_smollm2_teacher_on_llama_cpp_ends_in_instruction_jsonl_and_a_rejected_file(english_pack, tmp_path):
    profile = tmp_path / "small.toml"
    profile.write_text(
        "[selfinstruct]\ntarget = 3\nrequest_budget = 3\nrequests_per_task = 2\ntasks_per_request = 8\n"
        'max_tokens = 400\n\n[teacher]\nendpoint = "http://127.0.0.1:1/v1"\nmodel = ""\nconcurrency = 1\n'
    )
    out = tmp_path / "gen.jsonl"
    with llm.serve() as server:
        runner = Runner(FLOW, show_output=False, env=dict(os.environ))
        params = {"teacher": server.url, "teacher_model": server.model, "language": "en", "profile": str(profile)}
        with runner.run(**params, out=str(out), output_root=str(tmp_path / "runs")) as running:
            assert running.status == "successful", running.run["sift"].task.stderr if running.run else running.status
            run = running.run
    kept = instructions.load(str(out)).records  # a valid instruction JSONL
    rejected = [json.loads(line) for line in (tmp_path / "gen.rejected.jsonl").read_text().splitlines()]
    counts = run.data.counts
    assert counts["kept"] == len(kept) and sum(counts[rule] for rule in RULES) == len(rejected)
    assert all(row["rule"] in RULES and row["raw"] for row in rejected)
    provenance = json.loads((tmp_path / "gen.provenance.json").read_text())
    assert provenance["teacher"]["model"] == server.model and provenance["usage"]["completion_tokens"] > 0
    assert 1 <= provenance["usage"]["requests"] <= 3
