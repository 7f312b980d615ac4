"""The translation flow end to end on a tiny random seq2seq model: the path, protection, cache and QA run for real.

The translations are nonsense (random weights), so QA must flag them; a second
run over the same input must not call the backend at all.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from metaflow import Run, Runner

from barbarossa.data import instructions
from barbarossa.translate import translation

pytestmark = pytest.mark.flow

FLOW = str(ROOT / "flows" / "translate_flow.py")
SETTINGS = {
    "shard_rows": 10,
    "qa_policy": "flag",
    "backend": {
        "kind": "local",
        "folder": "tiny:t5",
        "source": "",
        "target": "",
        "prefix": "translate English to Azerbaijani: ",
        "max_new_tokens": 12,
    },
}


def run(output_root: str):
    runner = Runner(FLOW, show_output=False, env=dict(os.environ), config_value=[("translate", SETTINGS)])
    with runner.run(source="bundled-en", output_root=output_root) as running:
        assert running.status == "successful", running.run["end"].task.stderr if running.run else running.status
        return running.run


def test_translate_flow_writes_a_checked_versioned_dataset_and_reuses_its_cache(tmp_path):
    english = instructions.load("bundled-en").records
    first = run(str(tmp_path / "out"))
    stats, counts, dataset = first.data.stats, first.data.qa_counts, first.data.dataset
    assert len(list(first["translate"].tasks())) == 3  # 23 rows in shards of 10
    assert stats["rows"] == len(english) and stats["backend_calls"] > 0 and stats["cache_hits"] == 0
    assert counts["rows"] == len(english) and counts["flagged"] >= len(english) - counts["verbatim"] - 2
    assert counts["verbatim"] == 1 and counts["published"] == len(english) - counts["unusable"]  # "flag" keeps the rest
    with open(dataset["uri"], encoding="utf-8") as lines:
        published = [json.loads(line) for line in lines]
    verbatim = next(r for r in published if r["instruction"] == "`ls -la`")
    assert verbatim == {"instruction": "`ls -la`", "input": "", "output": "```\ntotal 0\n```"}
    assert all("qa" in r for r in published if r is not verbatim) and len(published) == counts["published"]
    assert dataset["uri"].endswith(f"/datasets/{dataset['fingerprint']}/az_alpaca.jsonl")
    card = Path(dataset["uri"].replace("az_alpaca.jsonl", "README.md")).read_text(encoding="utf-8")
    assert card.startswith("---\nlanguage:\n- az") and f"{counts['flagged']} flagged" in card
    assert instructions.load(dataset["uri"]).records  # the fine-tune flow can read it as training data

    second = run(str(tmp_path / "out"))
    assert second.data.stats["backend_calls"] == 0
    assert second.data.stats["cache_hits"] == stats["cache_misses"] and second.data.stats["cache_misses"] == 0
    assert second.data.dataset == dataset  # same input, same cache: the same dataset version


def without_aws(home) -> dict:
    """This process's environment with no AWS region or credentials anywhere boto3 looks (a new user's machine)."""
    for name in ("config", "credentials"):
        (home / name).write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **env,
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "environ", without_aws(tmp_path))  # boto3 reads os.environ when a Session is made


AWS = {"kind": "aws", "source": "en", "target": "az"}


def test_without_aws_settings_the_flow_stops_in_start_with_one_line(tmp_path):
    """The shipped default (AWS Translate) on a machine with no AWS settings: one line in `start`, no translate task."""
    run_id = tmp_path / "run_id"
    done = subprocess.run(
        [sys.executable, FLOW, "run", "--run-id-file", str(run_id), "--output-root", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=without_aws(tmp_path),
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    line = (
        "translate backend 'aws': no AWS region — set AWS_DEFAULT_REGION (or region in ~/.aws/config); "
        "no AWS credentials — set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(or AWS_PROFILE, or run `aws configure`), "
        "or use --config translate configs/translate/nllb.toml"
    )
    assert any(row.endswith(line) for row in output.splitlines()), output
    assert "Traceback" not in output and "NoRegionError" not in output
    assert [step.id for step in Run(f"TranslateFlow/{run_id.read_text()}")] == ["start"]


@pytest.mark.parametrize(
    "env, missing, present",
    [
        (
            {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
            "no AWS region — set AWS_DEFAULT_REGION",
            "credentials",
        ),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, "no AWS credentials — set AWS_ACCESS_KEY_ID", "region"),
        # boto3 ignores AWS_REGION: the check says so rather than pass and let translate die of NoRegionError
        (
            {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"},
            "no AWS region — set AWS_DEFAULT_REGION .*boto3 does not read AWS_REGION",
            "credentials",
        ),
    ],
)
def test_check_backend_names_the_missing_aws_setting(no_aws, env, missing, present):
    os.environ.update(env)
    with pytest.raises(translation.BackendError, match=missing) as err:
        translation.check_backend(AWS)
    assert present not in str(err.value) and "\n" not in str(err.value) and "nllb.toml" in str(err.value)
    os.environ.update({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    translation.check_backend(AWS)  # both set: nothing to say


def test_check_backend_reads_the_region_and_profile_from_the_aws_config_file(no_aws):
    with open(os.environ["AWS_CONFIG_FILE"], "w") as config:
        config.write("[profile ml]\nregion = eu-west-1\naws_access_key_id = k\naws_secret_access_key = s\n")
    os.environ["AWS_PROFILE"] = "ml"
    translation.check_backend(AWS)
    os.environ["AWS_PROFILE"] = "nope"
    with pytest.raises(translation.BackendError, match="could not be found — fix AWS_PROFILE"):
        translation.check_backend(AWS)


def test_check_backend_wants_a_local_model_folder_that_holds_a_config(tmp_path):
    local = {"kind": "local", "source": "eng_Latn", "target": "azj_Latn"}
    with pytest.raises(
        translation.BackendError, match=r"model folder \S+/nope does not exist — set \[backend\] folder"
    ):
        translation.check_backend({**local, "folder": str(tmp_path / "nope")})
    with pytest.raises(translation.BackendError, match="holds no config.json"):
        translation.check_backend({**local, "folder": str(tmp_path)})
    with pytest.raises(translation.BackendError, match="no model folder"):
        translation.check_backend(local)
    with pytest.raises(translation.BackendError, match="no tiny seq2seq model"):
        translation.check_backend({**local, "folder": "tiny:gpt2"})
    (tmp_path / "config.json").write_text("{}")
    translation.check_backend({**local, "folder": str(tmp_path)})
    translation.check_backend({**local, "folder": "tiny:t5"})
