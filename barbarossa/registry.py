"""Rosters of base models and fine-tune candidates, read from TOML data files.

Code holds no model names: `configs/rosters/<name>.toml` declares `[[base]]`
models (where the weights come from, family, licence) and `[[candidate]]`
recipes (which base, which LoRA settings). Every base also enters a run as an
untuned baseline, the row each of its candidates must beat.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from barbarossa.families import FAMILIES

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class RosterError(ValueError):
    """A roster file that does not validate; the message names the file and entry."""


@dataclass(frozen=True)
class Base:
    name: str
    source: str  # "wheel-gguf:<module>/<file>", "tiny:<family>", a local folder, or "hf:<id>[@rev]"
    family: str
    licence: str = "unknown"
    params: str = "?"
    max_length: int = 2048


@dataclass(frozen=True)
class Lora:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: str | tuple[str, ...] = "attention"


@dataclass(frozen=True)
class Candidate:
    name: str
    base: Base
    lora: Lora = field(default_factory=Lora)
    description: str = ""


@dataclass
class Roster:
    name: str
    path: Path
    bases: dict[str, Base]
    candidates: list[Candidate]


def rosters_dir() -> Path:
    return Path(os.environ.get("BARBAROSSA_ROSTERS", PROJECT_ROOT / "configs" / "rosters"))


def _require(entry: dict, key: str, kind: str, where: str):
    if key not in entry:
        raise RosterError(f"{where}: {kind} {entry.get('name', '?')!r}: missing field '{key}'")
    return entry[key]


def load_roster(path: Path) -> Roster:
    """Parse and validate one roster file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise RosterError(f"{path}: not valid TOML ({err})") from None
    bases: dict[str, Base] = {}
    for entry in doc.get("base", []):
        name = _require(entry, "name", "base", str(path))
        if name in bases:
            raise RosterError(f"{path}: duplicate base name {name!r}")
        family = _require(entry, "family", "base", str(path))
        if family not in FAMILIES:
            raise RosterError(f"{path}: base {name!r}: unknown family {family!r}; known: {', '.join(sorted(FAMILIES))}")
        known = {k: entry[k] for k in ("licence", "params", "max_length") if k in entry}
        bases[name] = Base(name=name, source=_require(entry, "source", "base", str(path)), family=family, **known)
    candidates: list[Candidate] = []
    for entry in doc.get("candidate", []):
        name = _require(entry, "name", "candidate", str(path))
        if name in bases or any(c.name == name for c in candidates):
            raise RosterError(f"{path}: duplicate name {name!r}")
        base_name = _require(entry, "base", "candidate", str(path))
        if base_name not in bases:
            raise RosterError(f"{path}: candidate {name!r}: unknown base {base_name!r}")
        lora = dict(entry.get("lora", {}))
        if isinstance(lora.get("targets"), list):
            lora["targets"] = tuple(lora["targets"])
        try:
            recipe = Lora(**lora)
        except TypeError as err:
            raise RosterError(f"{path}: candidate {name!r}: bad lora table ({err})") from None
        candidates.append(Candidate(name, bases[base_name], recipe, entry.get("description", "")))
    if not candidates:
        raise RosterError(f"{path}: no [[candidate]] entries")
    return Roster(doc.get("name", path.stem), path, bases, candidates)


def all_rosters() -> dict[str, Roster]:
    return {p.stem: load_roster(p) for p in sorted(rosters_dir().glob("*.toml"))}


def select(spec: str) -> list[Candidate]:
    """Candidates named by a comma list of roster names and/or candidate names."""
    rosters = all_rosters()
    chosen: dict[str, Candidate] = {}
    for token in [t.strip() for t in spec.split(",") if t.strip()]:
        if token in rosters:
            chosen.update((c.name, c) for c in rosters[token].candidates)
            continue
        matches = [c for r in rosters.values() for c in r.candidates if c.name == token]
        if not matches:
            known = ", ".join(sorted(rosters))
            raise RosterError(f"--models: {token!r} is neither a roster ({known}) nor a candidate in one")
        chosen[token] = matches[0]
    if not chosen:
        raise RosterError("--models selected nothing")
    return list(chosen.values())


def work_items(candidates: list[Candidate]) -> list[dict]:
    """Foreach items: one untuned baseline per distinct base, then the candidates.

    Items are plain dicts so they travel as small Metaflow artifacts.
    """
    bases = {c.base.name: c.base for c in candidates}
    items = [{"name": b.name, "kind": "baseline", "base": asdict(b), "lora": None} for b in bases.values()]
    items += [{"name": c.name, "kind": "candidate", "base": asdict(c.base), "lora": asdict(c.lora)} for c in candidates]
    return items
