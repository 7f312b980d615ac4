"""S3 end to end, and the Hub token: it reaches the tasks that need it through @secrets, and is never written.

One moto server on 127.0.0.1 serves S3 (the Metaflow datastore, the data splits,
adapters, checkpoints and release bundles) and AWS Secrets Manager (the token).
The flow runs end to end on tiny models of two families with a dry-run Hub
release (which needs the token); the leaderboard is read back through the Client
API. A probe (a `sitecustomize` on the tasks' PYTHONPATH) records, for every task
process, whether HF_TOKEN was in its environment when it exited: the steps that
carry @secrets (tune_small, tune_large, release) must have had it, no other.
Then the token is searched, plain and base64-encoded, in every task's stdout,
stderr, artifacts and metadata, every card (its base64 payload decoded), the
runner's output, and every object in the bucket (a paginated listing; gzipped
Metaflow blobs unpacked).
"""

import base64
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, moto_s3
from metaflow import Runner

pytestmark = [pytest.mark.flow, pytest.mark.server]

FAKE_TOKEN = "hf_barbarossaFAKEtoken0123456789abcdef"
FLOW = str(ROOT / "flows" / "finetune_flow.py")
WITH_SECRETS = {"tune_small", "tune_large", "release"}  # FollowInfra puts @secrets on these
WITH_CARDS = {"start": "data", "tune_small": "training", "tune_large": "training", "join": "leaderboard"}

PROBE = """
import atexit, hashlib, json, os, sys
if "step" in sys.argv[:-1]:  # a Metaflow task process: `flow.py ... step <name> --run-id ...`
    _step = sys.argv[sys.argv.index("step") + 1]

    def _record():
        token = os.environ.get("HF_TOKEN")  # only a hash of it leaves the task
        digest = hashlib.sha256(token.encode()).hexdigest() if token else None
        with open(os.path.join(os.environ["BARBAROSSA_TEST_PROBE"], f"{_step}-{os.getpid()}.json"), "w") as out:
            json.dump({"step": _step, "token_sha256": digest}, out)

    atexit.register(_record)
"""

READ_BACK = """
import json, sys
from metaflow import Run
from metaflow.cards import get_cards
from metaflow.plugins.cards.exception import CardNotPresentException
run = Run(sys.argv[1])
texts, cards = [], []
for step in run:
    for task in step:
        where = task.pathspec
        texts += [(f"{where} stdout", task.stdout), (f"{where} stderr", task.stderr)]
        texts += [(f"{where} artifact {a.id}", repr(a.data)) for a in task.artifacts]
        texts += [(f"{where} metadata {m.name}", repr([m.name, m.value, m.type])) for m in task.metadata]
        try:
            found = list(get_cards(task))
        except CardNotPresentException:  # a step without @card (the test checks which steps have cards)
            found = []
        for card in found:
            cards.append({"task": where, "step": step.id, "id": card.id, "html": card.get()})
            texts.append((f"{where} card {card.id} data", json.dumps(card.get_data())))
texts.append(("run tags", repr(sorted(run.tags) + sorted(run.system_tags))))
json.dump({"leaderboard": run.data.leaderboard, "released": run.data.released, "texts": texts, "cards": cards,
           "tasks": {step.id: len(list(step)) for step in run}}, open(sys.argv[2], "w"))
"""
CARD_DATA = re.compile(r'window\.__MF_DATA__\["[^"]+"\] = "([^"]+)"')


def card_payloads(html: str) -> list[str]:
    """The components of a card as JSON text: Metaflow inlines them base64-encoded in the HTML."""
    return [base64.b64decode(encoded).decode("utf-8", "replace") for encoded in CARD_DATA.findall(html)]


def token_forms(token: str) -> list[str]:
    """The token as it would appear in text: plain, or inside base64 at any of the three byte alignments."""
    raw, forms = token.encode(), [token]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        forms.append(
            encoded[-(-8 * shift // 6) : (8 * (shift + len(raw))) // 6]
        )  # the characters the token alone decides
    return forms


def s3_texts(client, bucket: str, page_size: int = 50) -> tuple[list[tuple[str, str]], int]:
    """(key, text) for every object in the bucket — gzipped Metaflow blobs unpacked, card payloads decoded — and
    pages read."""
    texts, pages = [], 0
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": page_size}
    ):
        pages += 1
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            text = body.decode("utf-8", "replace")
            texts += [(obj["Key"], text)] + [(f"{obj['Key']} (card payload)", p) for p in card_payloads(text)]
    return texts, pages


def test_token_forms_find_the_token_plain_and_base64_encoded():
    forms = token_forms(FAKE_TOKEN)
    for prefix in ("", "a", "ab", "abc"):
        encoded = base64.b64encode(f'{prefix}{{"text": "{FAKE_TOKEN}"}}'.encode()).decode()
        assert any(form in encoded for form in forms[1:])
    assert not any(form in base64.b64encode(b"hf_barbarossa FAKE token").decode() for form in forms)


def test_hub_token_from_secrets_manager_never_leaks(tmp_path, monkeypatch):
    import boto3

    from barbarossa import storage

    probe = tmp_path / "probe"
    (probe / "records").mkdir(parents=True)
    (probe / "sitecustomize.py").write_text(PROBE)
    with moto_s3(monkeypatch) as bucket:
        endpoint = os.environ["METAFLOW_S3_ENDPOINT_URL"]
        boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1").create_secret(
            Name="barbarossa/hf-token", SecretString=json.dumps({"HF_TOKEN": FAKE_TOKEN})
        )
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": endpoint,
            "METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE": "aws-secrets-manager",
            "AWS_SECRETS_MANAGER_DEFAULT_REGION": "us-east-1",
            "METAFLOW_RUN_MAX_WORKERS": "2",
            "METAFLOW_DATASTORE_SYSROOT_S3": f"{bucket}/metaflow",
            "BARBAROSSA_TEST_PROBE": str(probe / "records"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(probe), os.environ.get("PYTHONPATH")])),
        }
        env.pop("HF_TOKEN", None)
        infra = {
            "compute": "local",
            "models": "tiny",
            "large_from_gpu_memory_gb": 40,
            "secrets": ["barbarossa/hf-token"],
        }
        out = f"{bucket}/runs"
        runner = Runner(FLOW, show_output=False, env=env, config_value=[("infra", infra)], datastore="s3")
        with runner.run(
            models="tiny-llama-lora,tiny-t5-lora",
            profile="smoke",
            max_steps=2,
            output_root=out,
            release_to="hf:barbarossa-test",
        ) as running:
            assert running.status == "successful", running.run["end"].task.stderr if running.run else running.status
            run_id = running.run.id
            seen = [("runner stdout", running.stdout), ("runner stderr", running.stderr)]

        # Metaflow reads its S3 settings when imported, so the Client runs in a process started with them.
        dump = tmp_path / "readback.json"
        done = subprocess.run(
            [sys.executable, "-c", READ_BACK, f"FinetuneFlow/{run_id}", str(dump)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        back = json.loads(dump.read_text())
        assert {r["name"] for r in back["leaderboard"]} == {"tiny-llama", "tiny-llama-lora", "tiny-t5", "tiny-t5-lora"}
        assert all(r["status"] == "ok" for r in back["leaderboard"])
        assert all(r["adapter_uri"].startswith(f"{out}/") for r in back["leaderboard"] if r["kind"] == "candidate")
        released = back["released"]
        assert released and all(b["hub_token"] == "found" for b in released)  # the token did reach the release task
        assert all(b["bundle_uri"].startswith(f"{out}/") for b in released)

        # the token reached every task of the steps with @secrets, and no other task
        records = [json.loads(p.read_text()) for p in (probe / "records").glob("*.json")]
        assert {r["step"] for r in records} == set(back["tasks"])  # every step's tasks were probed
        tasks_with = {step: [r["token_sha256"] for r in records if r["step"] == step] for step in back["tasks"]}
        wanted = hashlib.sha256(FAKE_TOKEN.encode()).hexdigest()
        problems = []  # reported together at the end: one run shows every way the token went wrong
        for step, hashes in tasks_with.items():
            assert len(hashes) >= back["tasks"][step], (step, hashes)
            if step in WITH_SECRETS and set(hashes) != {wanted}:
                problems.append(f"{step}: a task ran without the Hub token ({hashes})")
            if step not in WITH_SECRETS and set(hashes) != {None}:
                problems.append(f"{step}: a task without @secrets had HF_TOKEN")
        assert back["tasks"]["tune_small"] == 4 and back["tasks"]["tune_large"] == 1  # 2 bases, 2 LoRAs; the idle item

        # every card of every step that has one, with its payload decoded (and the decoding seen to work)
        cards = back["cards"]
        assert {c["step"] for c in cards} == set(WITH_CARDS) and all(WITH_CARDS[c["step"]] == c["id"] for c in cards)
        assert len(cards) == sum(back["tasks"][step] for step in WITH_CARDS)
        payloads = [(f"{c['task']} card {c['id']} (decoded)", "\n".join(card_payloads(c["html"]))) for c in cards]
        assert all(text for _, text in payloads)  # every card's components were found and decoded
        decoded = "\n".join(text for _, text in payloads)
        assert (
            "Barbarossa leaderboard" in decoded
            and "Training tiny-llama-lora" in decoded
            and "Training tiny-t5-lora" in decoded
        )
        seen += [(where, text) for where, text in back["texts"]] + payloads
        seen += [(f"{c['task']} card {c['id']}", c["html"]) for c in cards]
        assert any(" metadata " in where for where, _ in seen) and any(" stderr" in where for where, _ in seen)

        # every object in the bucket: data splits, adapters, checkpoints, bundles, and Metaflow's own store
        objects, pages = s3_texts(storage.s3_client(), bucket.removeprefix("s3://"))
        keys = [key for key, _ in objects]
        assert pages > 1 and len(keys) > 50
        assert any(k.startswith("runs/") and k.endswith("adapter_model.safetensors") for k in keys)
        assert any(k.startswith("runs/") and "checkpoints/" in k for k in keys)
        assert any(k.startswith("metaflow/") and "/cards/" in k for k in keys)
        assert any(k.startswith("metaflow/") and "(card payload)" in k for k in keys)
        seen += objects
        forms = token_forms(FAKE_TOKEN)
        problems += [
            f"the Hub token leaked into {where}" for where, text in seen if any(form in text for form in forms)
        ]
        assert not problems, "\n".join(problems[:40])
