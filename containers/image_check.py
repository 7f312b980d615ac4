"""`make image-check`: build the production image and run flow tasks in it as Argo Workflows and AWS Batch run them.

1. A Docker engine and a local Debian base (engine.py): CI starts from a bare machine.
2. The image from containers/Dockerfile; only build arguments differ from production (see BUILD_ARGS).
3. Inside the image: the CLI finds the configs (`barbarossa models --models seed` lists 29), `barbarossa
   plan`, and torch is the pinned build with its CUDA libraries.
4. The flow compiled for Argo Workflows (tiny roster, S3 datastore on a moto server at 127.0.0.1, which
   also receives the code package); every template of its DAG run in a container exactly as Argo would
   (argo.py): the compiled command, arguments and environment, the image's user, no checkout mounted.
   One fine-tune container is killed mid-training and retried with the next retry count: it resumes from
   its S3 checkpoint. `barbarossa leaderboard` then reads the run's result.
5. The flow compiled for Step Functions / AWS Batch, and its tune task's Batch job run the same way (batch.py).

What a cluster provides and this machine cannot is substituted, and only that: CLUSTER below.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import argo  # noqa: E402
import batch  # noqa: E402
import engine  # noqa: E402

from barbarossa.infra import deploy  # noqa: E402

IMAGE = "barbarossa:check"
# Production builds take the defaults (the CUDA base image, torch's CUDA wheel from the PyTorch index). Here no
# registry is reachable: a debootstrapped Debian base, and torch from PyPI — whose Linux torch==<pin> is itself a
# CUDA build (its nvidia-* libraries come along), so the image carries CUDA libraries as in production.
# a CPU image: torch from PyPI (the CPU build here), no CUDA-only extras (Liger's Triton kernels cannot run here)
BUILD_ARGS = {"BASE_IMAGE": engine.BASE, "TORCH_INDEX": "https://pypi.org/simple", "GPU_EXTRAS": ""}
BUCKET = "barbarossa-image-check"
MAX_STEPS = 200  # long enough to kill a tiny candidate between two checkpoints


def say(text: str) -> None:
    print(text, flush=True)


def constraint(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{package}=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"constraints.txt pins no {package}")


def cluster(endpoint: str, metadata: str) -> dict[str, str]:
    """The settings a cluster gives every task, substituted here — nothing else is.

    - S3: the endpoint (compiled into the templates from the deployer's Metaflow config) and credentials,
      which a cluster gives through an IAM role (IRSA, the Batch job role); here moto's test keys.
    - Metadata: a Metaflow metadata service on a cluster; here the tasks' local metadata in one folder
      shared by all of them (mounted at `metadata`), which `barbarossa leaderboard` reads afterwards.
    The network is the host's (`docker run --network host`), so 127.0.0.1 reaches the S3 server.
    """
    return {
        "METAFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL": endpoint,  # S3, and DynamoDB for Step Functions
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": metadata,
    }


# --------------------------------------------------------------------------- containers


def docker_runner(extra_mounts: dict[str, str]):
    """A container runner for argo.Workflow / batch.run_job: `docker run` on the host network as the image's user."""

    def run(image, command, env, mounts, log: Path, name, interrupt, resources) -> int:
        argv = [engine.DOCKER, "run", "-d", "--name", name, "--network", "host"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        for source, target in {**mounts, **extra_mounts}.items():
            argv += ["-v", f"{source}:{target}"]
        argv += [image, *command]
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(shlex.join(argv) + "\n\n")
        say(
            f"$ docker run --name {name} --network host "
            f"({len(env)} env vars, {len(mounts) + len(extra_mounts)} volumes) "
            f"{image} {step_command(command)}"
        )
        engine.docker(*argv[1:], check=True, capture_output=True)
        killed = False
        while True:
            state = engine.docker(
                "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", name, capture_output=True, check=True
            ).stdout.split()
            if state[0] != "true":
                break
            if interrupt and not killed and interrupt():
                engine.docker("kill", name, capture_output=True)
                killed = True
                say(f"  killed {name} mid-training, as a lost node would")
            time.sleep(0.5)
        logs = engine.docker("logs", name, capture_output=True)
        with open(log, "a") as out:
            out.write(logs.stdout + logs.stderr)
        engine.docker("rm", "-f", name, capture_output=True)
        return int(state[1])

    return run


def step_command(command: list[str]) -> str:
    """A task's long `bash -c` line shortened to its Metaflow step command (the rest is Metaflow's setup)."""
    text = command[-1] if command else ""
    found = re.findall(r"python (\S+\.py) [^()]*? (step \S+ [^)]*)", text)
    return f"bash -c '… python {found[-1][0]} … {found[-1][1]} …'" if found else shlex.join(command)[:300]


def in_image(*command: str) -> str:
    done = engine.docker("run", "--rm", IMAGE, *command, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"in the image, `{' '.join(command)}` failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


# --------------------------------------------------------------------------- steps


def build_image() -> None:
    started = time.time()
    args = [a for name, value in BUILD_ARGS.items() for a in ("--build-arg", f"{name}={value}")]
    args += ["--build-arg", f"TORCH_BUILD={constraint('torch')}"]
    done = engine.docker("build", "-f", str(HERE / "Dockerfile"), *args, "-t", IMAGE, str(ROOT))
    if done.returncode != 0:
        raise SystemExit(f"docker build failed (exit {done.returncode})")
    size = engine.docker("image", "inspect", "-f", "{{.Size}}", IMAGE, capture_output=True, check=True).stdout
    say(f"image {IMAGE}: built in {time.time() - started:.0f} s, {int(size) / 1e9:.1f} GB")


def check_inside() -> None:
    listed = in_image("barbarossa", "models", "--models", "seed")
    count = re.search(r"Barbarossa models \((\d+)\)", listed)
    if not count or count.group(1) != "29":
        raise SystemExit(
            f"`barbarossa models --models seed` in the image lists {count and count.group(1)}, not 29:\n{listed}"
        )
    say("in the image: barbarossa models --models seed → 29 models")
    plan = in_image("barbarossa", "plan", "--models", "seed")
    say("in the image: barbarossa plan --models seed → " + " ".join(plan.strip().splitlines()[-1].split()))
    version = in_image("python", "-c", "import torch; print(torch.__version__, torch.version.cuda)").split()
    if version[0].split("+")[0] != constraint("torch") or version[1] == "None":
        raise SystemExit(f"torch in the image is {version}, not the CUDA build of torch=={constraint('torch')}")
    say(f"in the image: torch {version[0]}, CUDA {version[1]}")


def s3_server(work: Path):
    port = engine.free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(work / "moto.log", "w"),  # noqa: SIM115  (the server's log for as long as it runs)
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    deadline = time.time() + 30
    while True:
        try:
            s3.create_bucket(Bucket=BUCKET)
            return server, endpoint, s3
        except Exception:
            if time.time() > deadline:
                server.kill()
                raise
            time.sleep(0.3)


def compile_flow(orchestrator: str, infra: dict, env: dict) -> dict:
    """The compiled document (deploy.compile_deployment): uploads the code package to the S3 server, deploys nothing."""
    try:
        return deploy.compile_deployment(orchestrator, infra, env)
    except (RuntimeError, ValueError) as err:  # the create's failure, or the infra config refused
        raise SystemExit(str(err)) from err


def checkpoint_appeared(s3, prefix: str):
    """An interrupt for a tune container's first attempt: true once a training checkpoint is on S3."""

    def seen() -> bool:
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return any("/checkpoints/step-" in o["Key"] for o in listed.get("Contents", []))

    return seen


def trained_on_s3(s3, prefix: str) -> str:
    """What a fine-tune left on S3 under `prefix`: its adapter and its checkpoints, or the check fails."""
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    adapters = [
        k for k in keys if k.endswith("/adapter/adapter_model.safetensors") and "/release/" not in k
    ]  # the tune's own
    checkpoints = [k for k in keys if "/checkpoints/step-" in k]
    if not adapters or not checkpoints:
        raise SystemExit(f"no adapter or no checkpoint under s3://{BUCKET}/{prefix} ({len(keys)} objects)")
    return f"s3://{BUCKET}/{adapters[0]} and {len(checkpoints)} checkpoint files"


def run_argo(endpoint: str, s3, work: Path, compile_env: dict, metadata: Path) -> None:
    runs = f"s3://{BUCKET}/runs"
    infra = {
        "compute": "kubernetes",
        "models": "tiny-llama-lora",
        "large_from_gpu_memory_gb": 40,
        "output_root": runs,
        "kubernetes": {"image": IMAGE},
    }
    document = compile_flow("argo-workflows", infra, {**compile_env, "METAFLOW_KUBERNETES_NAMESPACE": "barbarossa"})
    killed = []

    def interrupt(task, template, retry):
        if template == "tune-small" and retry == 0 and not killed:
            seen = checkpoint_appeared(s3, "runs/")

            def now() -> bool:
                if seen():
                    killed.append(template)
                    return True
                return False

            return now
        return None

    workflow = argo.Workflow(
        document,
        {"profile": "smoke", "max-steps": MAX_STEPS},
        cluster(endpoint, "/metadata"),
        work / "argo",
        docker_runner({str(metadata): "/metadata"}),
        interrupt=interrupt,
        say=say,
    )
    say(f"Argo Workflows: workflow {workflow.name} from WorkflowTemplate {document['metadata']['name']}")
    started = time.time()
    attempts = workflow.run()
    say(f"Argo Workflows: {len(attempts)} containers in {time.time() - started:.0f} s")
    retried = [a for a in attempts if a.template == "tune-small" and a.retry == 1]
    if not killed or not retried:
        raise SystemExit(
            "no tune-small container was killed mid-training and retried "
            "(did training end before its first checkpoint?)"
        )
    resumed = retried[0].log.read_text()
    if "resuming after step" not in resumed:
        raise SystemExit(f"the retried tune-small did not resume from its checkpoint; log {retried[0].log}")
    say(
        "Argo Workflows: the killed fine-tune's retry "
        + re.search(r"[^\n]*resuming after step \d+", resumed).group(0).split("] ")[-1].strip()
    )
    board = subprocess.run(
        [
            str(Path(sys.executable).with_name("barbarossa")),
            "leaderboard",
            "--run",
            f"argo-{workflow.name}",
            "--namespace",
            "any",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            **compile_env,
            "METAFLOW_DEFAULT_METADATA": "local",
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(metadata),
            "COLUMNS": "100",
        },
    )
    if board.returncode != 0 or "tiny-llama-lora" not in board.stdout:
        raise SystemExit(f"barbarossa leaderboard could not read the run:\n{board.stdout}\n{board.stderr}")
    say(board.stdout.rstrip())
    say(f"Argo Workflows: on S3, {trained_on_s3(s3, 'runs/')}")


def run_batch(endpoint: str, s3, work: Path, compile_env: dict, metadata: Path) -> None:
    role = batch.batch_world(endpoint)
    infra = {
        "compute": "batch",
        "models": "tiny-llama-lora",
        "large_from_gpu_memory_gb": 40,
        "output_root": f"s3://{BUCKET}/sfn",
        "batch": {"image": IMAGE, "queue": "barbarossa-gpu"},
    }
    env = {
        **compile_env,
        "AWS_ENDPOINT_URL": endpoint,
        "METAFLOW_SFN_DYNAMO_DB_TABLE": "barbarossa-foreach",
        "METAFLOW_BATCH_JOB_QUEUE": "barbarossa-gpu",
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": role,
        "METAFLOW_SFN_IAM_ROLE": role,
    }
    definition = compile_flow("step-functions", infra, env)
    started = time.time()
    attempts = batch.run_until(
        definition,
        "tune_small",
        endpoint,
        {"profile": "smoke"},
        cluster(endpoint, "/metadata"),
        work / "batch",
        docker_runner({str(metadata): "/metadata"}),
        say=say,
    )
    say(f"AWS Batch: {len(attempts)} jobs in {time.time() - started:.0f} s; on S3, {trained_on_s3(s3, 'sfn/')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="use the image built last time")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs of every container)")
    parser.add_argument("--only", choices=("argo", "batch"), help="run one orchestrator's part (while working on it)")
    args = parser.parse_args()
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="barbarossa-image-check-"))
    failed = None
    try:
        with engine.running_engine(work / "dockerd.log"):
            engine.build_base(say=say)
            if not args.skip_build:
                build_image()
            check_inside()
            server, endpoint, s3 = s3_server(work)
            try:
                metadata = work / "metadata"
                (metadata / ".metaflow").mkdir(parents=True)
                for folder in (metadata, metadata / ".metaflow"):
                    folder.chmod(0o777)  # the tasks write it as the image's user
                compile_env = {
                    "METAFLOW_DEFAULT_DATASTORE": "s3",
                    "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{BUCKET}/metaflow",
                    "METAFLOW_S3_ENDPOINT_URL": endpoint,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "USERNAME": os.environ.get("USERNAME", "barbarossa"),
                }
                if args.only in (None, "argo"):
                    run_argo(endpoint, s3, work, compile_env, metadata)
                if args.only in (None, "batch"):
                    run_batch(endpoint, s3, work, compile_env, metadata)
            except (argo.TaskFailed, RuntimeError) as err:
                failed = str(err)
            finally:
                server.terminate()
    finally:
        if args.keep or failed:
            say(f"logs of every container: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        say(f"image-check FAILED after {time.time() - started:.0f} s: {failed}")
        return 1
    say(f"image-check passed in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
