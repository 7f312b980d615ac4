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
from pathlib import Path

from barbarossa.config import PROJECT_ROOT
from barbarossa.errors import UserError

DEFAULT = "az"
IDENTIFY_METHODS = (
    "lingua",
    "ngram",
)  # lingua: its shipped models; ngram: trained on bundled samples (no lingua model)
TEMPLATE_KEYS = ("preamble", "preamble_with_input", "instruction_header", "input_header", "response_header")
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


def _need(doc: dict, key: str, kind, path: Path, where: str = ""):
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        shown = f"[{where}] {key}" if where else key
        raise LanguageError(f"{path}: {shown} must be a non-empty {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def resolve(value: str) -> Path:
    """A file a pack names, relative to the project root of the process reading it (a remote task's code package)."""
    return Path(value) if Path(value).is_absolute() else PROJECT_ROOT / value


def of_run(data_summary: dict) -> dict:
    """The language pack a run's data summary carries; a run from before language packs was Azerbaijani."""
    return data_summary.get("language") or load()


def _file(value: str, path: Path, key: str) -> str:
    if not resolve(value).exists():
        raise LanguageError(f"{path}: {key} names {value!r}, which does not exist ({resolve(value)})")
    return value


def _validated(doc: dict, path: Path) -> dict:
    code = _need(doc, "code", str, path)
    if code != path.stem:
        raise LanguageError(f"{path}: code {code!r} must match the file name ({path.stem!r})")
    template = _need(doc, "template", dict, path)
    for key in TEMPLATE_KEYS:
        _need(template, key, str, path, "template")
    for key in ("instruction_header", "input_header", "response_header"):
        if not template[key].startswith(SECTION_MARK):
            raise LanguageError(
                f"{path}: [template] {key} must start with {SECTION_MARK!r} (answers are cut at the "
                f"next section), got {template[key]!r}"
            )
    identify = _need(doc, "identify", dict, path)
    method = identify.get("method", "lingua")
    if method not in IDENTIFY_METHODS:
        raise LanguageError(f"{path}: [identify] method must be one of {', '.join(IDENTIFY_METHODS)}, got {method!r}")
    _need(identify, "target", str, path, "identify")
    neighbours = _need(identify, "neighbours", list, path, "identify")
    if method == "lingua":
        _check_lingua_names(path, [identify["target"], *neighbours])
        texts = {}
    else:
        texts = _need(identify, "texts", dict, path, "identify")
        missing = {identify["target"], *neighbours} - set(texts)
        if missing:
            raise LanguageError(f"{path}: [identify] texts needs a sample file for {', '.join(sorted(missing))}")
        texts = {lang: _file(file, path, f"[identify] texts.{lang}") for lang, file in texts.items()}
    words = doc.get("words", {}).get("pattern", r"\S+")
    try:
        re.compile(words)
    except re.error as err:
        raise LanguageError(f"{path}: [words] pattern is not a regular expression ({err})") from None
    benchmarks = doc.get("benchmarks", {})
    for key in ("translate_into", "translate_out"):  # the instructions of the translation benchmarks, both directions
        _need(benchmarks, key, str, path, "benchmarks")
    sets = benchmarks.get("sets", [])
    for number, entry in enumerate(sets, start=1):
        if not isinstance(entry, dict) or set(entry) != {"name", "source"}:
            raise LanguageError(f'{path}: [benchmarks] sets entry {number} must be {{ name = "...", source = "..." }}')
    codes = doc.get("codes", {})
    return {
        "code": code,
        "name": _need(doc, "name", str, path),
        "script": doc.get("script", ""),
        "sample": _file(_need(doc, "sample", str, path), path, "sample"),
        "example": _need(doc, "example", str, path),
        "template": {key: template[key] for key in TEMPLATE_KEYS},
        "identify": {"method": method, "target": identify["target"], "neighbours": list(neighbours), "texts": texts},
        "codes": dict(codes),
        "words": words,
        "translate_into": benchmarks.get("translate_into", ""),
        "translate_out": benchmarks.get("translate_out", ""),
        "benchmarks": [
            {"name": e["name"], "source": _file(e["source"], path, f"[benchmarks] {e['name']}")} for e in sets
        ],
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


def _check_lingua_names(path: Path, names: list[str]) -> None:
    for name in names:
        if not isinstance(name, str) or name.upper() not in LINGUA_NAMES:
            raise LanguageError(
                f"{path}: [identify] {name!r} is not a lingua language (lingua names: AZERBAIJANI, "
                'TURKISH, ...); for a language lingua lacks use method = "ngram"'
            )
