"""Training/evaluation profiles (`configs/profiles/<name>.toml`), validated on load.

The flow's `start` step reads the profile once and passes the plain dict on,
so remote tasks never need the config files.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path

from barbarossa import metric_registry
from barbarossa.errors import UserError


def find_project_root(package: Path, home: str | None) -> Path:
    """Where configs/ and data/ are: beside the package in a checkout or a flow's code package (remote tasks
    read the configs of the commit that launched the run); for an installed package (a wheel, the image's
    /opt/venv) in the folder BARBAROSSA_HOME names."""
    beside = package.parent
    if (beside / "configs").is_dir() or not home:
        return beside
    return Path(home)


PROJECT_ROOT = find_project_root(Path(__file__).resolve().parent, os.environ.get("BARBAROSSA_HOME"))

# What a profile may choose; the code that reads a value checks it against the same tuple.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # weights and compute (models/runtime.py)
QUANTIZATIONS = ("none", "nf4", "auto")
CHECKPOINTING = (True, False, "auto")
# How a step runs on CUDA (models/runtime.py decides "auto"; train/speed.py and models/kernels.py apply it)
COMPILE = (True, False, "auto")  # decoder layers through torch.compile
KERNELS = ("auto", "liger", "torch")  # Liger's fused RMSNorm / rotary / SwiGLU where the family has them
ATTENTIONS = ("auto", "sdpa", "eager", "flex_attention", "flash_attention_2")
ADAPTER_DTYPES = ("auto", "fp32")  # auto: LoRA weights in the compute dtype with fp32 master copies (bf16)
# The metrics a release policy may rank on -> True when higher is better (decide/leaderboard.py)
DIRECTION = metric_registry.policy_directions()
THRESHOLDS_ON = ("point", "bound")
RENAMED_METRICS = {"az_fidelity": "fidelity"}  # a profile or run from before language packs
# What a benchmark reports (evaluate/benchmarks.py) -> True when higher is better
BENCHMARK_DIRECTION = metric_registry.group_directions("benchmark")
DEFAULT_POLICY = {
    "primary": "bits_per_byte",
    "min_gain": 0.015,
    "max_chrf_drop": 2.0,
    "min_fidelity": 0.9,
    "max_degenerate_rate": 0.2,
    "must_beat_last_release": True,
    "confidence": 0.95,
    "bootstrap_samples": 1000,
    "bootstrap_seed": 0,
    "thresholds_on": "point",
    "must_not_lose": [],
}

SCHEMA = {
    "train": {
        "max_steps": int,
        "batch_size": int,
        "grad_accum": int,
        "learning_rate": float,
        "warmup_steps": int,
        "weight_decay": float,
        "max_grad_norm": float,
        "max_length": int,
        "precision": str,
        "seed": int,
        "log_every": int,
        "packing": bool,
        "gradient_checkpointing": (bool, str),
        "checkpoint_every": int,
    },
    "eval": {
        "eval_fraction": float,
        "split_seed": int,
        "max_length": int,
        "max_loss_rows": int,
        "generate_rows": int,
        "max_new_tokens": int,
        "batch_size": int,
        "samples": int,
    },
    "policy": {
        "primary": str,
        "min_gain": float,
        "max_chrf_drop": float,
        "min_fidelity": float,
        "max_degenerate_rate": float,
        "must_beat_last_release": bool,
    },
}


# Keys a profile may leave out: (type, default).
OPTIONAL = {
    "train": {
        "share_prefix": (bool, True),
        "quantization": (str, "none"),
        # early stopping / fail-fast on a dev split carved from the training data (train/early.py); 0: off
        "dev_rows": (int, 0),
        "eval_every": (int, 0),
        "patience": (int, 0),
        "min_delta": (float, 0.0),
        "fail_fast_steps": (int, 0),
        # the step's speed levers (README "GPU speed"): "auto" takes each where it is measured to pay
        "compile": ((bool, str), "auto"),
        "kernels": (str, "auto"),
        "attention": (str, "auto"),
        "adapter_dtype": (str, "auto"),
    },
    "eval": {
        "extra_sets": (list, []),
        "extra_metrics": (list, []),
        "near_duplicate_threshold": (float, 0.8),
        # public benchmarks scored beside the held-out set (evaluate/benchmarks.py), on top of the language
        # pack's own: {name, source} tables; benchmark_rows caps the items of each (0: all)
        "benchmarks": (list, []),
        "benchmark_rows": (int, 0),
    },
    # how sure "improves on its base" must be (leaderboard.py, stats.py)
    "policy": {
        "confidence": (float, DEFAULT_POLICY["confidence"]),
        "bootstrap_samples": (int, DEFAULT_POLICY["bootstrap_samples"]),
        "bootstrap_seed": (int, DEFAULT_POLICY["bootstrap_seed"]),
        "thresholds_on": (str, DEFAULT_POLICY["thresholds_on"]),
        # benchmark metrics a candidate must not clearly lose against its base ("belebele.accuracy")
        "must_not_lose": (list, []),
    },
}


# Keys that were replaced: a profile still using one is told what took its place.
RENAMED = {
    ("policy", "min_loss_improvement"): "min_gain: the smallest gain of the primary metric over the base, in the "
    "primary's units (bits per byte by default: 0.015 is about 0.02 nats per token "
    "for SmolLM2 on Azerbaijani, ~2 bytes per token)",
}


# Keys whose value must be one of a few.
CHOICES = {
    ("train", "precision"): PRECISIONS,
    ("train", "quantization"): QUANTIZATIONS,
    ("train", "gradient_checkpointing"): CHECKPOINTING,
    ("train", "compile"): COMPILE,
    ("train", "kernels"): KERNELS,
    ("train", "attention"): ATTENTIONS,
    ("train", "adapter_dtype"): ADAPTER_DTYPES,
    ("policy", "thresholds_on"): THRESHOLDS_ON,
}


def _type_name(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


class ConfigError(UserError):
    """A profile that does not validate; the message names the file and key."""

    headline = "Profile"


def profiles_dir() -> Path:
    return Path(os.environ.get("BARBAROSSA_PROFILES", PROJECT_ROOT / "configs" / "profiles"))


def load_profile(name_or_path: str) -> dict:
    """A validated profile dict: {'name', 'train', 'eval', 'policy'}."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.toml")))
        if not known:
            raise ConfigError(
                f"profile {name_or_path!r} not found: no profiles in {profiles_dir()}; run from a checkout, "
                "or set BARBAROSSA_HOME to a folder holding configs/ and data/ (the image sets /opt/barbarossa)"
            )
        raise ConfigError(f"profile {name_or_path!r} not found ({path}); known profiles: {known}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    doc.setdefault("policy", dict(DEFAULT_POLICY))
    for section, keys in SCHEMA.items():
        table = doc.get(section)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: missing [{section}] table")
        optional = OPTIONAL.get(section, {})
        for key in table:
            if (section, key) in RENAMED:
                raise ConfigError(f"{path}: [{section}] {key} was replaced by {RENAMED[section, key]}")
        for key, kind in {**keys, **{k: kind for k, (kind, _) in optional.items()}}.items():
            if key not in table:
                if key in optional:
                    table[key] = copy.deepcopy(optional[key][1])
                    continue
                raise ConfigError(f"{path}: [{section}] missing key '{key}'")
            value = table[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                table[key] = value = float(value)
            kinds = kind if isinstance(kind, tuple) else (kind,)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                raise ConfigError(f"{path}: [{section}] {key} must be {_type_name(kind)}, got {value!r}")
            choices = CHOICES.get((section, key))
            if choices and value not in choices:
                shown = ", ".join(f'"{c}"' if isinstance(c, str) else str(c).lower() for c in choices)
                raise ConfigError(f"{path}: [{section}] {key} must be one of {shown}, got {value!r}")
        unknown = set(table) - set(keys) - set(optional)
        if unknown:
            raise ConfigError(f"{path}: [{section}] unknown key(s) {', '.join(sorted(unknown))}")
    doc["policy"]["primary"] = RENAMED_METRICS.get(doc["policy"]["primary"], doc["policy"]["primary"])
    if doc["policy"]["primary"] not in DIRECTION:
        raise ConfigError(f"{path}: [policy] primary must be one of {', '.join(DIRECTION)}")
    _check_bootstrap(path, doc["policy"])
    if not 0 < doc["eval"]["eval_fraction"] < 1:
        raise ConfigError(f"{path}: [eval] eval_fraction must be between 0 and 1")
    _check_extras(path, doc["eval"])
    _check_benchmarks(path, doc["eval"], doc["policy"])
    return {"name": path.stem, **{s: doc[s] for s in SCHEMA}}


def _check_bootstrap(path: Path, policy: dict) -> None:
    """A confidence strictly between 0 and 1 and enough resamples for its tails to mean something."""
    if not 0 < policy["confidence"] < 1:
        raise ConfigError(f"{path}: [policy] confidence must be between 0 and 1, got {policy['confidence']}")
    if policy["bootstrap_samples"] < 100:
        raise ConfigError(f"{path}: [policy] bootstrap_samples must be at least 100, got {policy['bootstrap_samples']}")
    if policy["min_gain"] < 0:
        raise ConfigError(f"{path}: [policy] min_gain must be 0 or more (a gain, in the primary metric's units)")


def _check_extras(path: Path, table: dict) -> None:
    """Extra eval sets are {name, source} tables with distinct names; extra metrics are existing module files."""
    names = []
    for number, entry in enumerate(table["extra_sets"], start=1):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"name", "source"}
            or not all(isinstance(v, str) for v in entry.values())
        ):
            raise ConfigError(
                f'{path}: [eval] extra_sets entry {number} must be {{ name = "...", source = "..." }}, got {entry!r}'
            )
        names.append(entry["name"])
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: [eval] extra_sets names must be distinct, got {names}")
    for number, module in enumerate(table["extra_metrics"], start=1):
        resolved = Path(module) if Path(module).is_absolute() else PROJECT_ROOT / module
        if not isinstance(module, str) or not resolved.suffix == ".py" or not resolved.exists():
            raise ConfigError(
                f"{path}: [eval] extra_metrics entry {number}: {module!r} is not an existing .py metric module"
            )
    table["extra_metrics"] = [
        str(Path(m) if Path(m).is_absolute() else PROJECT_ROOT / m) for m in table["extra_metrics"]
    ]


def _check_benchmarks(path: Path, table: dict, policy: dict) -> None:
    """Benchmarks are {name, source} tables; the policy's must_not_lose names '<benchmark>.<metric>' strings."""
    for number, entry in enumerate(table["benchmarks"], start=1):
        if (
            not isinstance(entry, dict)
            or set(entry) != {"name", "source"}
            or not all(isinstance(v, str) for v in entry.values())
        ):
            raise ConfigError(
                f'{path}: [eval] benchmarks entry {number} must be {{ name = "...", source = "..." }}, got {entry!r}'
            )
    for number, entry in enumerate(policy["must_not_lose"], start=1):
        metric = entry.rpartition(".")[2] if isinstance(entry, str) else None
        if metric not in BENCHMARK_DIRECTION or "." not in entry:
            raise ConfigError(
                f"{path}: [policy] must_not_lose entry {number} must be '<benchmark>.<metric>' with a metric "
                f"among {', '.join(BENCHMARK_DIRECTION)}, got {entry!r}"
            )


def with_overrides(profile: dict, *, max_steps: int = 0) -> dict:
    """The profile with command-line overrides applied (0 means 'keep the profile's')."""
    if max_steps < 0:
        raise ConfigError(f"--max-steps must be positive, got {max_steps}")
    if max_steps:
        profile = {**profile, "train": {**profile["train"], "max_steps": max_steps}}
    return profile
