"""Language packs (`configs/languages/<code>.toml`): everything that makes a run Azerbaijani, Kazakh or Turkish.

The prompt template's preamble and headers, which language an answer must be
in (and which ones it is most often confused with), the language's codes in
other systems (FLORES / NLLB, AWS Translate), what a word is for fertility, the
bundled instruction sample and the benchmark samples. Code holds no language:
a team adapting models to another language writes one file.

A pack is validated on load (file and key named in the error) and travels as
a plain dict (`load(...)`), so remote tasks never read the config files for it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from barbarossa.config import PROJECT_ROOT, Section, SettingError, check_sources, setting
from barbarossa.errors import UserError

DEFAULT = "az"
IDENTIFY_METHODS = (
    "lingua",
    "ngram",
)  # lingua: its shipped models; ngram: trained on bundled samples (no lingua model)
TEMPLATE_KEYS = ("preamble", "preamble_with_input", "instruction_header", "input_header", "response_header")
JUDGE_PLACEHOLDERS = ("{instruction}", "{input}", "{reference}", "{answer_a}", "{answer_b}")
JUDGE_LABELS = ("[[A]]", "[[B]]", "[[C]]")  # the verdicts a judge prompt asks for: A, B, a tie
TASKS = "{tasks}"  # in a pack's self-instruct prompt: how many tasks the numbered list runs to
SECTION_MARK = "### "  # every header starts a template section: an answer is cut where the model starts the next one


class LanguageError(UserError):
    """A language pack that is missing or does not validate; the message names the file and key."""

    headline = "Language pack"


def languages_dir() -> Path:
    return Path(os.environ.get("BARBAROSSA_LANGUAGES", PROJECT_ROOT / "configs" / "languages"))


def known() -> list[str]:
    return sorted(p.stem for p in languages_dir().glob("*.toml"))


def load(code_or_path: str = DEFAULT) -> dict:
    """The validated pack as a JSON-able dict; the files it names stay relative to the project root (`resolve`)."""
    path = Path(code_or_path)
    if path.suffix != ".toml":
        path = languages_dir() / f"{code_or_path}.toml"
    if not path.exists():
        names = ", ".join(known()) or f"none in {languages_dir()}"
        raise LanguageError(f"language {code_or_path!r} not found ({path}); known languages: {names}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise LanguageError(f"{path}: not valid TOML ({err})") from None
    return _validated(doc, path)


def resolve(value: str) -> Path:
    """A file a pack names, relative to the project root of the process reading it (a remote task's code package)."""
    return Path(value) if Path(value).is_absolute() else PROJECT_ROOT / value


def of_run(data_summary: dict) -> dict:
    """The language pack a run's data summary carries; a run from before language packs was Azerbaijani."""
    return data_summary.get("language") or load()


def _existing(value: str, key: str) -> str:
    if not resolve(value).exists():
        raise SettingError(key, f"names {value!r}, which does not exist ({resolve(value)})")
    return value


def _stated(section: Section, keys: tuple[str, ...]) -> None:
    """Text keys a pack must fill: an empty one would render an empty prompt part or instruction."""
    for key in keys:
        if not getattr(section, key).strip():
            raise SettingError(key, "must not be empty")


@dataclass(frozen=True)
class Template(Section):
    """The one prompt template of training, evaluation, release and chat (data/prompts.py)."""

    preamble: str = setting(help="the preamble of an instruction without input")
    preamble_with_input: str = setting(help="the preamble of an instruction with an input")
    instruction_header: str = setting(help=f"the header before the instruction; starts with {SECTION_MARK!r}")
    input_header: str = setting(help=f"the header before the input; starts with {SECTION_MARK!r}")
    response_header: str = setting(help=f"the header the answer follows; starts with {SECTION_MARK!r}")

    def check(self) -> None:
        _stated(self, TEMPLATE_KEYS)
        for key in ("instruction_header", "input_header", "response_header"):
            header = getattr(self, key)
            if not header.startswith(SECTION_MARK):
                raise SettingError(
                    key, f"must start with {SECTION_MARK!r} (answers are cut at the next section), got {header!r}"
                )


@dataclass(frozen=True)
class Identify(Section):
    """Fidelity: the share of answers in this language, against the languages a model slips into."""

    target: str = setting(help="this language as the method names it (lingua: AZERBAIJANI; ngram: a key of texts)")
    neighbours: tuple[str, ...] = setting(help="the languages an answer is most often confused with, named likewise")
    method: str = setting(
        "lingua",
        "lingua: its shipped models; ngram: trained on the bundled samples of `texts`",
        choices=IDENTIFY_METHODS,
    )
    texts: dict = setting(help="ngram: a sample file for the target and each neighbour", factory=dict)

    def check(self) -> None:
        _stated(self, ("target",))
        if self.method == "lingua":
            _check_lingua_names("target", [self.target])
            _check_lingua_names("neighbours", self.neighbours)
            return
        missing = {self.target, *self.neighbours} - set(self.texts)
        if missing:
            raise SettingError("texts", f"needs a sample file for {', '.join(sorted(missing))}")
        for language, file in self.texts.items():
            if not isinstance(file, str):
                raise SettingError(f"texts.{language}", f"must be str, got {file!r}")
            _existing(file, f"texts.{language}")


@dataclass(frozen=True)
class Codes(Section):
    """The language's codes in other systems."""

    flores: str = setting("", "FLORES-200 / NLLB / Belebele code (azj_Latn): benchmark files, a local translator")
    aws: str = setting("", "AWS Translate's code (az)")


@dataclass(frozen=True)
class Words(Section):
    """What a word is, for fertility (tokens per word)."""

    pattern: str = setting(r"\S+", "a regular expression matching one word")

    def check(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise SettingError("pattern", f"is not a regular expression ({err})") from None


@dataclass(frozen=True)
class Benchmarks(Section):
    """The pack's own benchmarks: the translation instructions and the bundled samples."""

    translate_into: str = setting(help="the instruction of the translation benchmark into this language")
    translate_out: str = setting(help="the instruction of the translation benchmark out of it (into English)")
    sets: tuple[dict, ...] = setting((), "benchmark samples: [{ name, source }] (a file, or a FLORES folder)")

    def check(self) -> None:
        _stated(self, ("translate_into", "translate_out"))
        check_sources(self.sets, "sets")
        for entry in self.sets:
            _existing(entry["source"], f"sets.{entry['name']}")


@dataclass(frozen=True)
class SelfInstructText(Section):
    """Self-instruct in this language (barbarossa/selfinstruct/): what the teacher is asked, which tasks are off."""

    prompt: str = setting(
        "",
        f"the request's opening: asks for tasks in this language with the English labels; {TASKS!r} is the count",
    )
    blacklist: tuple[str, ...] = setting(
        (), "stems, in this language and English: an instruction with a word starting with one is rejected"
    )
    blacklist_words: tuple[str, ...] = setting(
        (), "whole words rejected likewise, where a stem would catch common words (az: şəkil, not şəkildə)"
    )

    def check(self) -> None:
        if self.prompt.strip() and TASKS not in self.prompt:
            raise SettingError("prompt", f"must say how many tasks: the placeholder {TASKS!r}")
        for key in ("blacklist", "blacklist_words"):
            for entry in getattr(self, key):
                if not isinstance(entry, str) or not entry.strip():
                    raise SettingError(key, f"entries must be words, got {entry!r}")


@dataclass(frozen=True)
class JudgeText(Section):
    """The pairwise judge's prompt in this language's terms (barbarossa/judge/): which language an answer must be in."""

    prompt: str = setting(
        "",
        "the judge's request: names the expected answer language, asks for [[A]], [[B]] or [[C]]; placeholders "
        + ", ".join(JUDGE_PLACEHOLDERS),
    )
    no_input: str = setting("(none)", "what the prompt shows as the input of an instruction without one")

    def check(self) -> None:
        if not self.prompt.strip():
            return
        for needed in (*JUDGE_PLACEHOLDERS, *JUDGE_LABELS):
            if needed not in self.prompt:
                raise SettingError("prompt", f"must contain {needed!r}")


@dataclass(frozen=True)
class Pack(Section):
    """A language pack's top-level keys; its tables follow."""

    ERROR = LanguageError
    code: str = setting(help="the language's code: the file's name (az for az.toml)")
    name: str = setting(help="the language's name in English, for cards and tables")
    sample: str = setting(help="the bundled instruction sample `--train-data bundled` reads (a JSONL file)")
    example: str = setting(help="an instruction, shown rendered on model cards")
    template: Template = setting(help="the prompt template")
    identify: Identify = setting(help="how fidelity identifies the language")
    benchmarks: Benchmarks = setting(help="the pack's benchmarks")
    script: str = setting("", "ISO 15924 script (Latn, Cyrl), for cards")
    codes: Codes = setting(help="codes in other systems", factory=Codes)
    words: Words = setting(help="what a word is", factory=Words)
    selfinstruct: SelfInstructText = setting(help="self-instruct's request and blacklist", factory=SelfInstructText)
    judge: JudgeText = setting(help="the pairwise judge's prompt", factory=JudgeText)

    def check(self) -> None:
        _stated(self, ("code", "name", "example"))
        _existing(self.sample, "sample")


def _validated(doc: dict, path: Path) -> dict:
    """The pack checked against `Pack`, as the plain dict remote tasks and run artifacts carry."""
    pack = Pack.from_table(doc, str(path))
    if pack.code != path.stem:
        raise LanguageError(f"{path}: code {pack.code!r} must match the file name ({path.stem!r})")
    identify = pack.identify
    return {
        "code": pack.code,
        "name": pack.name,
        "script": pack.script,
        "sample": pack.sample,
        "example": pack.example,
        "template": asdict(pack.template),
        "identify": {
            "method": identify.method,
            "target": identify.target,
            "neighbours": list(identify.neighbours),
            "texts": dict(identify.texts) if identify.method == "ngram" else {},
        },
        "codes": asdict(pack.codes),
        "words": pack.words.pattern,
        "translate_into": pack.benchmarks.translate_into,
        "translate_out": pack.benchmarks.translate_out,
        "benchmarks": [dict(entry) for entry in pack.benchmarks.sets],
        "selfinstruct": {
            "prompt": pack.selfinstruct.prompt,
            "blacklist": list(pack.selfinstruct.blacklist),
            "blacklist_words": list(pack.selfinstruct.blacklist_words),
        },
        "judge": asdict(pack.judge),
    }


# lingua 2.1's 75 languages, so loading a pack needs no lingua import (its wheel is 96 MB of models: a GPU check
# carries no such thing); tests/test_languages.py keeps the list equal to the installed lingua's.
LINGUA_NAMES = frozenset(
    {
        "AFRIKAANS",
        "ALBANIAN",
        "ARABIC",
        "ARMENIAN",
        "AZERBAIJANI",
        "BASQUE",
        "BELARUSIAN",
        "BENGALI",
        "BOKMAL",
        "BOSNIAN",
        "BULGARIAN",
        "CATALAN",
        "CHINESE",
        "CROATIAN",
        "CZECH",
        "DANISH",
        "DUTCH",
        "ENGLISH",
        "ESPERANTO",
        "ESTONIAN",
        "FINNISH",
        "FRENCH",
        "GANDA",
        "GEORGIAN",
        "GERMAN",
        "GREEK",
        "GUJARATI",
        "HEBREW",
        "HINDI",
        "HUNGARIAN",
        "ICELANDIC",
        "INDONESIAN",
        "IRISH",
        "ITALIAN",
        "JAPANESE",
        "KAZAKH",
        "KOREAN",
        "LATIN",
        "LATVIAN",
        "LITHUANIAN",
        "MACEDONIAN",
        "MALAY",
        "MAORI",
        "MARATHI",
        "MONGOLIAN",
        "NYNORSK",
        "PERSIAN",
        "POLISH",
        "PORTUGUESE",
        "PUNJABI",
        "ROMANIAN",
        "RUSSIAN",
        "SERBIAN",
        "SHONA",
        "SLOVAK",
        "SLOVENE",
        "SOMALI",
        "SOTHO",
        "SPANISH",
        "SWAHILI",
        "SWEDISH",
        "TAGALOG",
        "TAMIL",
        "TELUGU",
        "THAI",
        "TSONGA",
        "TSWANA",
        "TURKISH",
        "UKRAINIAN",
        "URDU",
        "VIETNAMESE",
        "WELSH",
        "XHOSA",
        "YORUBA",
        "ZULU",
    }
)


def _check_lingua_names(key: str, names) -> None:
    for name in names:
        if not isinstance(name, str) or name.upper() not in LINGUA_NAMES:
            raise SettingError(
                key,
                f"{name!r} is not a lingua language (lingua names: AZERBAIJANI, TURKISH, ...); for a language "
                'lingua lacks use method = "ngram"',
            )
