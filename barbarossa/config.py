"""Settings: every key a profile may set, with its type, default and help, validated once when it is read.

A profile (`configs/profiles/<name>.toml`) has four tables, each a frozen dataclass below: `[train]`,
`[early_stopping]`, `[eval]` and `[policy]`. TOML is merged into the dataclass and checked on load
(type, allowed values, ranges), so the code receives typed objects and never restates a default. Each
work item's effective settings — the profile with the roster entry's overrides, lengths capped at the
base's context — are resolved once (`Profile.for_item`) and used by training, the masking preview,
the plan and the model card alike. `Section` is the machinery the infra config, roster entries and language
packs declare their keys with too; `docs/settings.md` is generated from all of them (`python -m
barbarossa.settings_reference`; a test keeps it current).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
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

# What a profile may choose for the keys with a few allowed values (engine/runtime.py decides each "auto").
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
QUANTIZATIONS = ("none", "nf4", "auto")
CHECKPOINTING = (True, False, "auto")
COMPILE = (True, False, "auto")
KERNELS = ("auto", "liger", "torch")
ATTENTIONS = ("auto", "sdpa", "eager", "flex_attention", "flash_attention_2")
ADAPTER_DTYPES = ("auto", "bf16", "fp32")
THRESHOLDS_ON = ("point", "bound")
LLM_BACKENDS = ("openai", "transformers")  # who answers a teacher's or a judge's request (barbarossa/llm/)
JUDGE_MODES = ("auto", "logprobs", "text")  # how a verdict is read (barbarossa/judge/pairs.py)
# The metrics a release policy may rank on -> True when higher is better: a live view of the metric registry
DIRECTION = metric_registry.policy_directions()
RENAMED_METRICS = {"az_fidelity": "fidelity"}  # a profile or run from before language packs
# What a benchmark reports (evaluate/benchmark_scoring.py) -> True when higher is better
BENCHMARK_DIRECTION = metric_registry.group_directions("benchmark")
JUDGE_DIRECTION = metric_registry.group_directions("judge")  # a judge's win rates, which a policy may need too


class ConfigError(UserError):
    """A profile that does not validate; the message names the file and key."""

    headline = "Profile"


class SettingError(ValueError):
    """A value a section refuses; `key` names it, so the loader can say which file and table it came from."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key} {message}")
        self.key = key


def setting(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    choices: tuple = (),
    required: bool = False,
    factory=dataclasses.MISSING,
    written: str = "",
):
    """A key of a file: its default (or `factory` making one), one line of help, the values it may take, and
    whether a file must state it.

    `required` keys have a default for code (tests, a base evaluated without a profile) but a profile file
    must set them: they decide what a run costs, and a forgotten one should not pass silently. A key with
    neither default nor factory must always be stated. `written` is the type as a file writes it, where code
    holds something richer (a candidate's base: a name in the file, the base itself in code). Fields declared
    without `setting` are filled by code, never read from a file.
    """
    metadata = {"help": help, "choices": choices, "required": required, "written": written}
    return field(default=default, default_factory=factory, metadata=metadata)


def _shown(choice) -> str:
    return f'"{choice}"' if isinstance(choice, str) else str(choice).lower()


def _is_section(hint) -> bool:
    return isinstance(hint, type) and issubclass(hint, Section)


def _kind_name(hint) -> str:
    """The type as a TOML writer knows it: list, table, int, ..."""
    if isinstance(hint, types.UnionType):
        return " or ".join(_kind_name(arg) for arg in typing.get_args(hint) if arg is not types.NoneType)
    if typing.get_origin(hint) is tuple:
        return "list"
    if hint is dict or _is_section(hint):
        return "table"
    return hint.__name__


def _takes_list(hint) -> bool:
    """A tuple field (or a union with one) takes a TOML list, held as a tuple so the section stays frozen."""
    if isinstance(hint, types.UnionType):
        return any(_takes_list(arg) for arg in typing.get_args(hint))
    return typing.get_origin(hint) is tuple


def _conforms(value, hint) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and (hint is bool or not isinstance(value, bool))


def file_keys(cls) -> list[dataclasses.Field]:
    """The fields a file may set: those declared with `setting` (the others are filled by code)."""
    return [spec for spec in dataclasses.fields(cls) if "help" in spec.metadata]


def must_state(spec: dataclasses.Field, required: bool = True) -> bool:
    """Whether a file must state this key: it has no default, or it is `required` and the file is checked so."""
    no_default = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
    return no_default or (required and spec.metadata["required"])


@dataclass(frozen=True)
class Section:
    """A table of settings: its fields are checked (type, allowed values) when built, then by `check`."""

    TABLE: typing.ClassVar[str] = ""  # the table's name in its file; "" for a file's top level
    ERROR: typing.ClassVar[type[UserError]] = ConfigError  # what a file that does not validate raises

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            value, hint = getattr(self, spec.name), hints[spec.name]
            if isinstance(value, list) and _takes_list(hint):
                object.__setattr__(self, spec.name, value := tuple(value))
            if not _conforms(value, hint):
                raise SettingError(spec.name, f"must be {_kind_name(hint)}, got {value!r}")
            if hint is float:
                object.__setattr__(self, spec.name, float(value))
            choices = spec.metadata.get("choices")
            if choices and value not in choices:
                raise SettingError(spec.name, f"must be one of {', '.join(map(_shown, choices))}, got {value!r}")
        self.check()

    def check(self) -> None:
        """Checks across fields or of ranges; raise SettingError naming the key."""

    @classmethod
    def from_table(cls, table: dict, where: str, *, required: bool = True, label: str | None = None, error=None):
        """Build from a TOML table: unknown keys, missing required keys and bad values name file, table and key.

        `where` names the file (and the entry in it); `label` the table (the class's TABLE; a sub-table's is
        its dotted key). A key whose type is a section is built from its sub-table the same way, and every
        refusal is `error` (the outermost section's ERROR), so one file's errors are all of one kind.
        """
        label = cls.TABLE if label is None else label
        error = error or cls.ERROR
        here = f"{where}: [{label}]" if label else f"{where}:"
        problem = cls._key_problem(table, label, required)
        if problem:
            raise error(f"{here} {problem}")
        hints, values = typing.get_type_hints(cls), dict(table)
        for key, value in table.items():
            if _is_section(hints[key]) and isinstance(value, dict):
                inner = f"{label}.{key}" if label else key
                values[key] = hints[key].from_table(value, where, required=required, label=inner, error=error)
        try:
            return cls(**values)
        except SettingError as refused:
            raise error(f"{here} {refused}") from None

    @classmethod
    def _key_problem(cls, table: dict, label: str, required: bool) -> str | None:
        """What is wrong with the table's keys (a replaced, unknown or missing one), or None."""
        for key in table:
            if (label, key) in RENAMED:
                return f"{key} was replaced by {RENAMED[label, key]}"
        keys = [spec.name for spec in file_keys(cls)]
        unknown = sorted(set(table) - set(keys))
        if unknown:
            return f"unknown key(s) {', '.join(unknown)} (known: {', '.join(keys)})"
        for spec in file_keys(cls):
            if spec.name not in table and must_state(spec, required):
                return f"missing key '{spec.name}'"
        return None

    def replace(self, **changes):
        """A copy with `changes`, checked like a loaded table."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Train(Section):
    """How one LoRA fine-tune runs (a roster candidate's `train = {...}` overrides any of these)."""

    TABLE = "train"
    max_steps: int = setting(16, "optimizer steps per candidate (--max-steps overrides)", required=True)
    batch_size: int = setting(8, "examples per optimizer step before accumulation", required=True)
    grad_accum: int = setting(1, "batches accumulated into one optimizer step", required=True)
    learning_rate: float = setting(2e-4, "peak learning rate (LoRA tolerates ~10x a full fine-tune's)", required=True)
    warmup_steps: int = setting(0, "linear warm-up steps before the cosine decay", required=True)
    weight_decay: float = setting(0.0, "AdamW weight decay on the LoRA weights", required=True)
    max_grad_norm: float = setting(1.0, "gradient norm clipped to this", required=True)
    max_length: int = setting(512, "tokens per example (prompt + response + EOS); capped at the base's", required=True)
    precision: str = setting(
        "auto",
        "weights and compute: auto = bf16 where native, fp16 on older GPUs, else fp32",
        choices=PRECISIONS,
        required=True,
    )
    seed: int = setting(0, "seed of the data order and LoRA initialisation", required=True)
    log_every: int = setting(10, "steps between log lines and live-card updates", required=True)
    packing: bool = setting(
        True, "pack examples into rows (position ids restart) where the family supports it", required=True
    )
    gradient_checkpointing: bool | str = setting(
        False,
        "recompute activations in backward; auto: only where the plan says they would not fit",
        choices=CHECKPOINTING,
        required=True,
    )
    checkpoint_every: int = setting(0, "steps between resumable checkpoints; 0: only the last", required=True)
    share_prefix: bool = setting(True, "the prompt preamble common to a batch's examples runs once (KV cache)")
    quantization: str = setting(
        "none",
        "nf4: QLoRA (4-bit base); auto: nf4 only where 16-bit LoRA would not fit the GPU",
        choices=QUANTIZATIONS,
    )
    compile: bool | str = setting(
        "auto", "decoder layers through torch.compile (auto: on a GPU where gpu-check verified it)", choices=COMPILE
    )
    kernels: str = setting(
        "auto", "Liger's fused kernels for the families it covers (auto: on a GPU where verified)", choices=KERNELS
    )
    attention: str = setting(
        "auto",
        "attention kernel (auto: a variable-length one for packed rows on a GPU where verified, else SDPA)",
        choices=ATTENTIONS,
    )
    adapter_dtype: str = setting(
        "auto",
        "bf16: LoRA weights in bf16, fp32 masters in the optimizer (needs bf16 compute); auto: bf16 where verified",
        choices=ADAPTER_DTYPES,
    )

    def check(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accum", "max_length", "log_every"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"must be at least 1, got {getattr(self, key)}")
        for key in ("warmup_steps", "checkpoint_every"):
            if getattr(self, key) < 0:
                raise SettingError(key, f"must be 0 or more, got {getattr(self, key)}")


@dataclass(frozen=True)
class EarlyStopping(Section):
    """Early stopping and fail-fast on a dev split carved from the training rows (train/early.py); 0: off."""

    TABLE = "early_stopping"
    dev_rows: int = setting(0, "training rows set aside as the dev split (never held-out rows); 0: off")
    eval_every: int = setting(0, "steps between dev evaluations (bits per byte); 0: off")
    patience: int = setting(0, "stop after this many evaluations without a gain of min_delta; 0: never")
    min_delta: float = setting(0.0, "the smallest dev gain that counts, in bits per byte")
    fail_fast_steps: int = setting(0, "a candidate not below its untuned base on dev by this step stops; 0: never")

    @property
    def enabled(self) -> bool:
        return self.dev_rows > 0 and self.eval_every > 0

    def check(self) -> None:
        for spec in dataclasses.fields(self):
            if getattr(self, spec.name) < 0:
                raise SettingError(spec.name, f"must be 0 or more, got {getattr(self, spec.name)}")


def check_sources(entries: tuple, key: str) -> None:
    """Named sources are {name, source} tables with distinct names (a profile's sets, a language pack's)."""
    for number, entry in enumerate(entries, start=1):
        if not (isinstance(entry, dict) and set(entry) == {"name", "source"}) or not all(
            isinstance(v, str) for v in entry.values()
        ):
            raise SettingError(f"{key} entry {number}", f'must be {{ name = "...", source = "..." }}, got {entry!r}')
    names = [entry["name"] for entry in entries]
    if len(set(names)) != len(names):
        raise SettingError(key, f"names must be distinct, got {names}")


@dataclass(frozen=True)
class Eval(Section):
    """The evaluation every work item gets, the same for all (evaluate/protocol.py)."""

    TABLE = "eval"
    eval_fraction: float = setting(0.1, "held-out share carved from the training data by content hash", required=True)
    split_seed: int = setting(0, "seed of the held-out split", required=True)
    max_length: int = setting(512, "tokens per scored example; capped at the base's", required=True)
    max_loss_rows: int = setting(64, "held-out rows scored for loss and bits per byte", required=True)
    generate_rows: int = setting(16, "held-out rows answered greedily (chrF++, BLEU, fidelity)", required=True)
    max_new_tokens: int = setting(48, "tokens generated per answer", required=True)
    batch_size: int = setting(8, "rows per batch, lowered to fit the device's memory", required=True)
    samples: int = setting(3, "answers kept per model for review", required=True)
    near_duplicate_threshold: float = setting(
        0.8, "training rows this similar (Jaccard of 5-char shingles) to an eval prompt are removed; 0: off"
    )
    extra_sets: tuple[dict, ...] = setting((), "more held-out sets: [{ name, source }] (file, s3:// or HF id)")
    extra_metrics: tuple[str, ...] = setting((), "more metric modules (.py files, `evaluate` style) scored on answers")
    benchmarks: tuple[dict, ...] = setting((), "public benchmarks beside the language pack's own: [{ name, source }]")
    benchmark_rows: int = setting(0, "items scored per benchmark; 0: all")

    def check(self) -> None:
        if not 0 < self.eval_fraction < 1:
            raise SettingError("eval_fraction", "must be between 0 and 1")
        check_sources(self.extra_sets, "extra_sets")
        check_sources(self.benchmarks, "benchmarks")
        resolved = []
        for number, module in enumerate(self.extra_metrics, start=1):
            path = Path(module) if Path(module).is_absolute() else PROJECT_ROOT / module
            if path.suffix != ".py" or not path.exists():
                raise SettingError(f"extra_metrics entry {number}:", f"{module!r} is not an existing .py metric module")
            resolved.append(str(path))
        object.__setattr__(self, "extra_metrics", tuple(resolved))


@dataclass(frozen=True)
class Policy(Section):
    """Which candidates are released: the gates a candidate must pass against its base (decide/leaderboard.py)."""

    TABLE = "policy"
    primary: str = setting(
        "bits_per_byte",
        "ranking metric: " + " | ".join(DIRECTION),
        required=True,
    )
    min_gain: float = setting(0.015, "the primary must improve on the base by this, in its own units", required=True)
    max_chrf_drop: float = setting(2.0, "chrF++ points a candidate may lose against its base", required=True)
    min_fidelity: float = setting(0.9, "share of answers identified as the run's language", required=True)
    max_degenerate_rate: float = setting(0.2, "share of empty or looping answers a release may have", required=True)
    max_undetermined_rate: float = setting(
        0.5, "share of answers too short to tell their language a release may have (fidelity leaves them out)"
    )
    must_beat_last_release: bool = setting(True, "also beat the newest earlier release of the same name", required=True)
    confidence: float = setting(0.95, "level of the paired bootstrap intervals")
    bootstrap_samples: int = setting(1000, "resamples of the eval rows per interval")
    bootstrap_seed: int = setting(0, "seed of the resampling")
    thresholds_on: str = setting(
        "point",
        "bound: the gates judge the interval's conservative end, not the point estimate",
        choices=THRESHOLDS_ON,
    )
    must_not_lose: tuple[str, ...] = setting(
        (),
        "benchmark metrics ('<benchmark>.<metric>') a candidate must not clearly lose against its base, and judge "
        "win rates ('judge.win_rate_vs_base', ..._vs_release, the lc_ ones) it must not clearly lose (below 0.5)",
    )

    def check(self) -> None:
        object.__setattr__(self, "primary", RENAMED_METRICS.get(self.primary, self.primary))
        if self.primary not in DIRECTION:
            raise SettingError("primary", f"must be one of {', '.join(DIRECTION)}, got {self.primary!r}")
        if not 0 < self.confidence < 1:
            raise SettingError("confidence", f"must be between 0 and 1, got {self.confidence}")
        if self.bootstrap_samples < 100:
            raise SettingError("bootstrap_samples", f"must be at least 100, got {self.bootstrap_samples}")
        if self.min_gain < 0:
            raise SettingError("min_gain", "must be 0 or more (a gain, in the primary metric's units)")
        for number, entry in enumerate(self.must_not_lose, start=1):
            metric = entry.rpartition(".")[2] if isinstance(entry, str) else None
            if entry not in JUDGE_DIRECTION and (metric not in BENCHMARK_DIRECTION or "." not in entry):
                raise SettingError(
                    f"must_not_lose entry {number}",
                    f"must be '<benchmark>.<metric>' with a metric among {', '.join(BENCHMARK_DIRECTION)}, "
                    f"or a judge's win rate ({', '.join(JUDGE_DIRECTION)}), got {entry!r}",
                )

    def needs_judge(self) -> list[str]:
        """The judge metrics this policy ranks on or must not lose (none: it decides without a judge)."""
        return [m for m in (self.primary, *self.must_not_lose) if m in JUDGE_DIRECTION]


@dataclass(frozen=True)
class Judge(Section):
    """Pairwise judging of greedy answers against the base's and the last release's (docs/judge.md)."""

    TABLE = "judge"
    endpoint: str = setting("", 'the judge\'s base URL ending in /v1; "": no judging')
    model: str = setting("", 'the model the endpoint serves (GET /v1/models); "": no judging')
    api_key_env: str = setting("", 'environment variable holding the API key, sent as a Bearer token; "": no key')
    backend: str = setting(
        "openai", "openai: an OpenAI-compatible endpoint; transformers: a local model", choices=LLM_BACKENDS
    )
    prompts: int = setting(16, "held-out prompts judged per comparison (the first ones, the same for every model)")
    top_k: int = setting(0, "judge the best k candidates by the primary metric; 0: every candidate")
    mode: str = setting(
        "auto",
        "logprobs: the verdict read from the label's log-probabilities; text: [[A]] / [[B]] / [[C]] parsed; "
        "auto: log-probabilities where the server returns them",
        choices=JUDGE_MODES,
    )
    max_tokens: int = setting(16, "tokens a verdict may run to")
    logprobs: int = setting(10, "top log-probabilities asked per verdict token (logprobs and auto modes)")
    concurrency: int = setting(4, "verdicts asked at once")
    bootstrap_samples: int = setting(1000, "resamples of the judged prompts for the win rate's interval")
    confidence: float = setting(0.95, "level of the win rate's interval")
    seed: int = setting(0, "seed of the resampling, and sent with each request (greedy verdicts need none)")

    @property
    def enabled(self) -> bool:
        """Whether anything is judged: an endpoint (or a local model) and a model are named."""
        return bool(self.model) and (bool(self.endpoint) or self.backend == "transformers")

    def check(self) -> None:
        for key in ("prompts", "max_tokens", "concurrency"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"must be at least 1, got {getattr(self, key)}")
        for key in ("top_k", "logprobs"):
            if getattr(self, key) < 0:
                raise SettingError(key, f"must be 0 or more, got {getattr(self, key)}")
        if self.bootstrap_samples < 100:
            raise SettingError("bootstrap_samples", f"must be at least 100, got {self.bootstrap_samples}")
        if not 0 < self.confidence < 1:
            raise SettingError("confidence", f"must be between 0 and 1, got {self.confidence}")
        if self.backend == "openai" and bool(self.endpoint) != bool(self.model):
            missing = "model (--judge-model)" if self.endpoint else "endpoint (--judge)"
            raise SettingError(
                missing.split()[0], f"must be named too: a judge needs an endpoint and a model ({missing})"
            )
        if self.endpoint and not self.endpoint.rstrip("/").endswith("/v1"):
            raise SettingError("endpoint", f"must be a base URL ending in /v1, got {self.endpoint!r}")


# Keys that were replaced: a profile still using one is told what took its place.
RENAMED = {
    ("policy", "min_loss_improvement"): "min_gain: the smallest gain of the primary metric over the base, in the "
    "primary's units (bits per byte by default: 0.015 is about 0.02 nats per token "
    "for SmolLM2 on Azerbaijani, ~2 bytes per token)",
    **{("train", spec.name): f"[early_stopping] {spec.name}" for spec in dataclasses.fields(EarlyStopping)},
}
SECTIONS = {"train": Train, "early_stopping": EarlyStopping, "eval": Eval, "policy": Policy, "judge": Judge}


@dataclass(frozen=True)
class Profile:
    """A whole profile; `for_item` gives one work item's effective settings."""

    name: str
    train: Train = field(default_factory=Train)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    eval: Eval = field(default_factory=Eval)
    policy: Policy = field(default_factory=Policy)
    judge: Judge = field(default_factory=Judge)

    @classmethod
    def from_tables(cls, name: str = "custom", **tables: dict) -> Profile:
        """A profile from plain tables (benchmarks, tests, notebooks): checked like a file, nothing required."""
        unknown = sorted(set(tables) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{name}: unknown table(s) {', '.join(unknown)}")
        return cls(name, **{t: SECTIONS[t].from_table(v, name, required=False) for t, v in tables.items()})

    def for_item(self, item: dict) -> Profile:
        """The settings one work item runs with (resolved once, in `start`, and read everywhere after)."""
        return self.resolved(item.get("train") or {}, item["base"].get("max_length"))

    def resolved(self, overrides: dict, base_length: int | None) -> Profile:
        """The roster entry's [train] overrides applied, training and evaluation lengths capped at the base's."""
        train = self.train.replace(**overrides)
        evaluation = self.eval
        if base_length:
            train = train.replace(max_length=min(train.max_length, base_length))
            evaluation = evaluation.replace(max_length=min(evaluation.max_length, base_length))
        return dataclasses.replace(self, train=train, eval=evaluation)

    def with_judge(self, endpoint: str = "", model: str = "") -> Profile:
        """The profile with `--judge URL` / `--judge-model NAME` over its [judge] table, checked with the policy: a
        policy that ranks on a judge's win rate, or must not lose one, needs a judge, and one that ranks on it
        judges every candidate (`top_k` chooses by the primary, which is not known before judging)."""
        flags = {key: value for key, value in (("endpoint", endpoint), ("model", model)) if value}
        try:
            judge = self.judge.replace(**flags)
        except SettingError as error:
            raise ConfigError(f"--judge / --judge-model over profile {self.name!r} [judge]: {error}") from None
        needs = self.policy.needs_judge()
        if needs and not judge.enabled:
            raise ConfigError(
                f"profile {self.name!r}: [policy] names {', '.join(needs)}, a judge's win rate, but judging is off: "
                "set [judge] endpoint and model, or pass --judge URL --judge-model NAME"
            )
        if self.policy.primary in JUDGE_DIRECTION and judge.top_k:
            raise ConfigError(
                f"profile {self.name!r}: [judge] top_k = {judge.top_k} chooses candidates by the primary metric, but "
                f"[policy] primary is {self.policy.primary}, known only after judging: set top_k = 0"
            )
        return dataclasses.replace(self, judge=judge)

    def with_max_steps(self, max_steps: int = 0) -> Profile:
        """The profile with --max-steps applied (0 means 'keep the profile's')."""
        if max_steps < 0:
            raise ConfigError(f"--max-steps must be positive, got {max_steps}")
        return dataclasses.replace(self, train=self.train.replace(max_steps=max_steps)) if max_steps else self


def check_overrides(overrides: dict, where: str) -> None:
    """A roster candidate's `train = {...}`: known [train] keys with valid values (checked when the roster loads)."""
    try:
        Train().replace(**overrides)
    except TypeError:
        known = {spec.name for spec in dataclasses.fields(Train)}
        raise ConfigError(f"{where}: unknown train override(s) {', '.join(sorted(set(overrides) - known))}") from None
    except SettingError as error:
        raise ConfigError(f"{where}: train override {error}") from None


def profiles_dir() -> Path:
    return Path(os.environ.get("BARBAROSSA_PROFILES", PROJECT_ROOT / "configs" / "profiles"))


def load_profile(name_or_path: str) -> Profile:
    """A validated profile: each table merged into its section's defaults, errors naming file, table and key."""
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
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(f'[{t}]' for t in unknown)}")
    sections = {}
    for table, cls in SECTIONS.items():
        given = doc.get(table)
        if given is None and table in ("train", "eval"):
            raise ConfigError(f"{path}: missing [{table}] table")
        sections[table] = cls.from_table(given or {}, str(path), required=given is not None)
    return Profile(name=path.stem, **sections)


@dataclass(frozen=True)
class Document:
    """A kind of file a user writes, as the reference shows it: a title, where it lives, a note, its tables."""

    title: str
    file: str
    note: str
    tables: dict  # heading -> Section class; a section's sub-tables follow it


TOP_LEVEL = "top level"  # the heading of a file's keys outside any table
PROFILE = Document(
    "Profile",
    "configs/profiles/<name>.toml",
    "A profile has these tables ([judge] is optional: judging is off unless it names an endpoint and a model, "
    "docs/judge.md). A roster candidate's `train = { ... }` overrides [train] keys for that candidate only.",
    {f"[{table}]": cls for table, cls in SECTIONS.items()},
)


def reference(documents: tuple[Document, ...]) -> str:
    """Every key of these files — name, type, default, help — as Markdown (docs/settings.md; a test keeps it
    current). The caller names the documents: this module cannot import the stages that declare some of them."""
    lines = [
        "# Settings reference",
        "",
        "Generated from the settings classes by `python -m barbarossa.settings_reference > docs/settings.md`; "
        "do not edit.",
        "Every file below is checked when it is read (an error names the file and the key). **required** keys",
        "must be stated in the file; the others take the default shown.",
    ]
    for document in documents:
        lines += ["", f"## {document.title}: `{document.file}`", "", document.note]
        for heading, cls in document.tables.items():
            lines += _table_reference(cls, heading)
    return "\n".join(lines) + "\n"


def _table_reference(cls: type[Section], heading: str) -> list[str]:
    """One table's keys, then each of its sub-tables'."""
    hints = typing.get_type_hints(cls)
    lines = [
        "",
        f"### {heading}",
        "",
        (cls.__doc__ or "").strip(),
        "",
        "| key | type | default | help |",
        "|---|---|---|---|",
    ]
    lines += [_key_row(spec, hints[spec.name]) for spec in file_keys(cls)]
    for spec in file_keys(cls):
        if _is_section(hints[spec.name]) and not spec.metadata["written"]:
            inner = f"[{spec.name}]" if heading == TOP_LEVEL else f"{heading} {spec.name}"
            lines += _table_reference(hints[spec.name], inner)
    return lines


def _key_row(spec: dataclasses.Field, hint) -> str:
    if must_state(spec):
        default = "**required**"
    elif _is_section(hint):
        default = "the table below"
    elif spec.default is None:
        default = "unset"
    else:
        value = spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory()
        default = f"`{_default_shown(value)}`"
    choices = spec.metadata.get("choices")
    shown = " (" + " \\| ".join(map(_shown, choices)) + ")" if choices else ""
    described = spec.metadata["help"].replace("|", "\\|")
    kind = spec.metadata["written"] or _kind_name(hint)
    return f"| `{spec.name}` | {kind}{shown} | {default} | {described} |"


def _default_shown(value) -> str:
    if isinstance(value, tuple):
        return "[]" if not value else repr(list(value))
    if isinstance(value, dict):
        return "{}" if not value else repr(value)
    return _shown(value)
