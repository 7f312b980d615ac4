"""S3 end to end, and the Hub token: it reaches the tasks that need it through @secrets, and is never written.

One moto server on 127.0.0.1 serves S3 (the Metaflow datastore, the data splits,
adapters, checkpoints and release bundles) and AWS Secrets Manager (the token).
The flow runs end to end on tiny models of two families with a dry-run Hub
release (which needs the token); the leaderboard is read back through the Client
API; then every artifact, card, task log and output object is searched for the token.
"""

import json
import os

import subprocess
import sys

from metaflow import Runner

from conftest import ROOT, moto_s3

FAKE_TOKEN = "hf_barbarossaFAKEtoken0123456789abcdef"
FLOW = str(ROOT / "flows" / "finetune_flow.py")
READ_BACK = """
import json, sys
from metaflow import Run
from metaflow.cards import get_cards
run = Run(sys.argv[1])
texts = []
for step in run:
    for task in step:
        texts += [task.stdout, task.stderr] + [repr(a.data) for a in task.artifacts]
        if step.id in ("start", "tune_small", "join"):  # the steps with cards
            texts += [card.get() for card in get_cards(task)]
json.dump({"leaderboard": run.data.leaderboard, "released": run.data.released, "texts": texts}, open(sys.argv[2], "w"))
"""


def test_hub_token_from_secrets_manager_never_leaks(tmp_path, monkeypatch):
    import boto3

    from barbarossa import storage

    with moto_s3(monkeypatch) as bucket:
        endpoint = os.environ["METAFLOW_S3_ENDPOINT_URL"]
        boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1").create_secret(
            Name="barbarossa/hf-token", SecretString=json.dumps({"HF_TOKEN": FAKE_TOKEN}))
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "METAFLOW_DEFAULT_SECRETS_BACKEND_TYPE": "aws-secrets-manager",
               "AWS_SECRETS_MANAGER_DEFAULT_REGION": "us-east-1", "METAFLOW_RUN_MAX_WORKERS": "2",
               "METAFLOW_DATASTORE_SYSROOT_S3": f"{bucket}/metaflow"}
        env.pop("HF_TOKEN", None)
        infra = {"compute": "local", "models": "tiny", "large_from_gpu_memory_gb": 40, "secrets": ["barbarossa/hf-token"]}
        out = f"{bucket}/runs"
        runner = Runner(FLOW, show_output=False, env=env, config_value=[("infra", infra)], datastore="s3")
        with runner.run(models="tiny-llama-lora,tiny-t5-lora", profile="smoke", max_steps=2, output_root=out,
                        release_to="hf:barbarossa-test") as running:
            assert running.status == "successful", running.run["end"].task.stderr if running.run else running.status
            run_id = running.run.id

        # Metaflow reads its S3 settings when imported, so the Client runs in a process started with them.
        dump = tmp_path / "readback.json"
        done = subprocess.run([sys.executable, "-c", READ_BACK, f"FinetuneFlow/{run_id}", str(dump)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        back = json.loads(dump.read_text())
        assert {r["name"] for r in back["leaderboard"]} == {"tiny-llama", "tiny-llama-lora", "tiny-t5", "tiny-t5-lora"}
        assert all(r["adapter_uri"].startswith(f"{out}/") for r in back["leaderboard"] if r["kind"] == "candidate")
        released = back["released"]
        assert released and all(b["hub_token"] == "found" for b in released)  # the token did reach the release task
        assert all(b["bundle_uri"].startswith(f"{out}/") for b in released)
        seen = back["texts"]
        bucket_name = bucket.removeprefix("s3://")
        client = storage.s3_client()
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket_name, Prefix="runs/")["Contents"]]
        assert any(k.endswith("adapter_model.safetensors") for k in keys) and any("checkpoints/" in k for k in keys)
        seen += [client.get_object(Bucket=bucket_name, Key=k)["Body"].read().decode("utf-8", "replace") for k in keys]
        assert len(seen) > 30
        assert not [text[:80] for text in seen if FAKE_TOKEN in text]
