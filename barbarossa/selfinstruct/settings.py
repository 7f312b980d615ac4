"""Self-instruct's knobs (`configs/selfinstruct/<name>.toml`, table [selfinstruct]) and the profile loader.

The same file carries a [teacher] table (the model endpoint asked for tasks); the LLM layer declares its keys, so
here it is handed back as a plain table for that layer to check.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from barbarossa.config import PROJECT_ROOT, ConfigError, Section, SettingError, setting
from barbarossa.data import dedup

TABLES = ("selfinstruct", "teacher")


@dataclass(frozen=True)
class SelfInstruct(Section):
    """How tasks are asked for and which are kept (barbarossa/selfinstruct/, docs/selfinstruct.md)."""

    TABLE = "selfinstruct"
    seeds_per_prompt: int = setting(3, "seed tasks shown in each request, sampled per request")
    tasks_per_request: int = setting(20, "tasks a request's numbered list runs to, the seeds included")
    temperature: float = setting(1.0, "the teacher's sampling temperature")
    top_p: float = setting(1.0, "the teacher's nucleus sampling mass")
    max_tokens: int = setting(3072, "tokens the teacher may write per request")
    target: int = setting(100, "kept tasks wanted: requests stop once this many are kept", required=True)
    request_budget: int = setting(50, "requests at the most, however few tasks are kept", required=True)
    requests_per_task: int = setting(4, "requests one parallel (foreach) task sends")
    expected_keep_rate: float = setting(0.5, "share of generated tasks expected kept: sizes the first wave")
    similarity: float = setting(0.7, "ROUGE-L F1 with a seed or kept instruction above which a task is `similar`")
    min_words: int = setting(4, "an instruction of fewer words is rejected (`length`)")
    max_words: int = setting(150, "an instruction of more words is rejected (`length`)")
    contamination: float = setting(
        dedup.DEFAULT_THRESHOLD,
        "Jaccard of 5-char shingles with a held-out or benchmark prompt from which a task is `contaminated`; 0: off",
    )
    seed: int = setting(0, "seed of the seed-task sampling (each request's draw is fixed by it and its index)")

    @property
    def new_per_request(self) -> int:
        """Tasks a request can add: the numbered list minus the seeds shown."""
        return self.tasks_per_request - self.seeds_per_prompt

    def check(self) -> None:
        for key in ("seeds_per_prompt", "max_tokens", "target", "request_budget", "requests_per_task", "min_words"):
            if getattr(self, key) < 1:
                raise SettingError(key, f"must be at least 1, got {getattr(self, key)}")
        if self.tasks_per_request <= self.seeds_per_prompt:
            raise SettingError("tasks_per_request", f"must be more than seeds_per_prompt ({self.seeds_per_prompt})")
        if self.max_words < self.min_words:
            raise SettingError("max_words", f"must be at least min_words ({self.min_words})")
        if not 0 <= self.temperature <= 2:
            raise SettingError("temperature", f"must be from 0 to 2, got {self.temperature}")
        for key in ("top_p", "expected_keep_rate", "similarity"):
            if not 0 < getattr(self, key) <= 1:
                raise SettingError(key, f"must be above 0 and at most 1, got {getattr(self, key)}")
        if not 0 <= self.contamination <= 1:
            raise SettingError("contamination", f"must be from 0 (off) to 1, got {self.contamination}")
        if self.seed < 0:
            raise SettingError("seed", f"must be 0 or more, got {self.seed}")


def profiles_dir() -> Path:
    return Path(os.environ.get("BARBAROSSA_SELFINSTRUCT", PROJECT_ROOT / "configs" / "selfinstruct"))


def load_profile(name_or_path: str = "default") -> tuple[SelfInstruct, dict]:
    """The [selfinstruct] settings, validated (errors name file, table and key), and the [teacher] table as
    written, for the LLM layer to check."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in profiles_dir().glob("*.toml"))) or f"none in {profiles_dir()}"
        raise ConfigError(f"self-instruct profile {name_or_path!r} not found ({path}); known profiles: {known}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(doc) - set(TABLES))
    if unknown:
        raise ConfigError(
            f"{path}: unknown table(s) {', '.join(f'[{t}]' for t in unknown)} (known: [selfinstruct], [teacher])"
        )
    for table in TABLES:
        if not isinstance(doc.get(table), dict):
            raise ConfigError(f"{path}: missing [{table}] table")
    return SelfInstruct.from_table(doc["selfinstruct"], str(path)), dict(doc["teacher"])
