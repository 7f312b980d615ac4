"""Public benchmark sets, read and validated in `start` like the instruction data, written as one file each.

Two kinds, each from the formats the sets ship in:

    choice       multiple choice, scored by log-likelihood (evaluate/benchmark_scoring.py):
                 Belebele's own JSONL (`flores_passage`, `question`, `mc_answer1`…`mc_answer4`,
                 `correct_answer_num` 1–4), or a generic JSONL `{question, choices, answer}`
                 (answer = the index of the right choice, from 0; an optional `context`)
    translation  English ↔ the run's language, scored by chrF++ of greedy translations:
                 a JSONL of `{source, target}` (source English), two aligned one-sentence-per-line
                 files as FLORES ships them (`eng_Latn.dev+azj_Latn.dev`), or a FLORES folder
                 (its `eng_Latn.<split>` beside the language pack's `<code>.<split>`)

Normalised items: choice `{question, context, choices, answer}`, translation
`{source, target}`. A bad file stops the run before any model loads, with the
file, line and field named.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from barbarossa import languages, storage
from barbarossa.data.instructions import DataError

BELEBELE_FIELDS = (
    "flores_passage",
    "question",
    "mc_answer1",
    "mc_answer2",
    "mc_answer3",
    "mc_answer4",
    "correct_answer_num",
)
ENGLISH = "eng_Latn"


def _read(source: str) -> str:
    try:
        raw = storage.read_bytes(source) if storage.is_s3(source) else Path(source).read_bytes()
    except OSError as err:
        raise DataError(f"{source}: cannot read ({err.strerror or err})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{source}: not UTF-8 (byte {err.start})") from None


def _text(value, source: str, line: int, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{source}: line {line}, field '{name}': must be a non-empty string, got {value!r}")
    return value.strip()


def _belebele(row: dict, source: str, line: int) -> dict:
    choices = [_text(row.get(f"mc_answer{k}"), source, line, f"mc_answer{k}") for k in range(1, 5)]
    answer = row.get("correct_answer_num")
    if str(answer).strip() not in {"1", "2", "3", "4"} or isinstance(answer, bool):
        raise DataError(f"{source}: line {line}, field 'correct_answer_num': must be 1–4, got {answer!r}")
    return {
        "question": _text(row.get("question"), source, line, "question"),
        "context": _text(row.get("flores_passage"), source, line, "flores_passage"),
        "choices": choices,
        "answer": int(str(answer).strip()) - 1,
    }


def _generic_choice(row: dict, source: str, line: int) -> dict:
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise DataError(
            f"{source}: line {line}, field 'choices': must be a list of at least 2 strings, got {choices!r}"
        )
    choices = [_text(c, source, line, f"choices[{i}]") for i, c in enumerate(choices)]
    answer = row.get("answer")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise DataError(
            f"{source}: line {line}, field 'answer': must be the index of the right choice "
            f"(0–{len(choices) - 1}), got {answer!r}"
        )
    context = row.get("context", "")
    if not isinstance(context, str):
        raise DataError(f"{source}: line {line}, field 'context': must be a string, got {context!r}")
    return {
        "question": _text(row.get("question"), source, line, "question"),
        "context": context.strip(),
        "choices": choices,
        "answer": answer,
    }


def _pair(row: dict, source: str, line: int) -> dict:
    return {
        "source": _text(row.get("source"), source, line, "source"),
        "target": _text(row.get("target"), source, line, "target"),
    }


def _format_of(row: dict, source: str) -> tuple[str, callable]:
    """(kind, row reader) from the fields of a JSONL file's first row."""
    if set(BELEBELE_FIELDS) <= set(row):
        return "choice", _belebele
    if {"question", "choices", "answer"} <= set(row):
        return "choice", _generic_choice
    if {"source", "target"} <= set(row):
        return "translation", _pair
    raise DataError(
        f"{source}: line 1: not a benchmark format this tool reads (fields {sorted(row)}); expected "
        f"Belebele's ({', '.join(BELEBELE_FIELDS)}), {{question, choices, answer}} or {{source, target}}"
    )


def _jsonl(source: str) -> tuple[str, list[dict]]:
    kind, reader, items = None, None, []
    for line, text in enumerate(_read(source).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: line {line}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{source}: line {line}: expected a JSON object, got {type(row).__name__}")
        if reader is None:
            kind, reader = _format_of(row, source)
        items.append(reader(row, source, line))
    if not items:
        raise DataError(f"{source}: no items")
    return kind, items


def _aligned(english: str, other: str) -> list[dict]:
    """Pairs from two aligned one-sentence-per-line files (FLORES's layout); line i of one translates line i of
    the other."""
    sides = [_read(f).splitlines() for f in (english, other)]
    if len(sides[0]) != len(sides[1]):
        raise DataError(
            f"{english} has {len(sides[0])} lines but {other} has {len(sides[1])}: aligned files must match"
        )
    for file, lines in zip((english, other), sides):
        for line, text in enumerate(lines, start=1):
            if not text.strip():
                raise DataError(f"{file}: line {line}: empty sentence")
    if not sides[0]:
        raise DataError(f"{english}: no sentences")
    return [{"source": a.strip(), "target": b.strip()} for a, b in zip(*sides)]


def _flores_folder(folder: Path, code: str) -> list[dict]:
    """The English file of a FLORES folder and the pack language's, with the same split suffix (.dev, .devtest)."""
    if not code:
        raise DataError(f"{folder}: a FLORES folder needs the language pack's codes.flores")
    for english in sorted(folder.glob(f"{ENGLISH}.*")):
        other = folder / f"{code}{english.suffix}"
        if other.exists():
            return _aligned(str(english), str(other))
    raise DataError(f"{folder}: no {ENGLISH}.<split> beside a {code}.<split> (FLORES's layout)")


def read(name: str, source: str, language: dict) -> dict:
    """One benchmark set: {name, kind, source, items, fingerprint}, validated."""
    if "+" in source and not storage.is_s3(source):
        english, _, other = source.partition("+")
        kind, items = "translation", _aligned(english, other)
    elif not storage.is_s3(source) and Path(source).is_dir():
        kind, items = "translation", _flores_folder(Path(source), language.get("codes", {}).get("flores", ""))
    else:
        kind, items = _jsonl(source)
    text = json.dumps(items, ensure_ascii=False, sort_keys=True)
    return {
        "name": name,
        "kind": kind,
        "source": source,
        "items": items,
        "fingerprint": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
    }


def entries_for(language: dict, profile_sets: list[dict], extra_eval: str = "") -> list[dict]:
    """{name, source} of every benchmark a run scores: the language pack's (its files under the project root),
    the profile's, then `--extra-eval` files (comma-separated; each named after its file, made unique)."""
    own = [{"name": e["name"], "source": str(languages.resolve(e["source"]))} for e in language.get("benchmarks", [])]
    entries = [*own, *profile_sets]
    for source in (s.strip() for s in extra_eval.split(",") if s.strip()):
        stem = Path(source.partition("+")[2] or source.rstrip("/")).name.split(".")[0]
        name, number = stem, 2
        while any(e["name"] == name for e in entries):
            name, number = f"{stem}-{number}", number + 1
        entries.append({"name": name, "source": source})
    names = [e["name"] for e in entries]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(
            f"benchmark names must be distinct; given twice: {', '.join(duplicated)} "
            "(the language pack's and the profile's [eval] benchmarks share one name space)"
        )
    return entries


def load_all(entries: list[dict], language: dict, max_items: int = 0) -> list[dict]:
    """Every benchmark read and validated (nothing written): the first `max_items` items of each (0: all)."""
    sets = []
    for entry in entries:
        found = read(entry["name"], entry["source"], language)
        if max_items:
            found["items"] = found["items"][:max_items]
        sets.append(found)
    return sets


def write_all(sets: list[dict], out_root: str) -> list[dict]:
    """Each set's items as <out_root>/benchmarks/<name>.jsonl; the small references tasks read them by."""
    written = []
    for found in sets:
        text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in found["items"])
        uri = storage.write_text(storage.join(out_root, "benchmarks", f"{found['name']}.jsonl"), text)
        written.append(
            {k: found[k] for k in ("name", "kind", "source", "fingerprint")}
            | {"uri": uri, "items": len(found["items"])}
        )
    return written


def read_items(uri: str) -> list[dict]:
    return [json.loads(line) for line in _read(uri).splitlines() if line.strip()]


# --------------------------------------------------------------------------- mirroring public sets for a deployment

MANIFEST_SUFFIX = ".manifest.json"


def parse_hub_spec(spec: str) -> tuple[str, str, str]:
    """(repo, revision, path) of 'hf:<owner>/<dataset>@<revision>:<path in the repo>'; the revision is required."""
    scheme, _, rest = spec.partition(":")
    repo_rev, _, path = rest.partition(":")
    repo, _, revision = repo_rev.partition("@")
    if scheme != "hf" or repo.count("/") != 1 or not path:
        raise DataError(
            f"{spec!r}: a benchmark to fetch is hf:<owner>/<dataset>@<revision>:<file in the repo>, "
            "e.g. hf:facebook/belebele@<commit>:data/azj_Latn.jsonl"
        )
    if not revision:
        raise DataError(f"{spec!r}: pin a revision (@<commit or tag>) so every run scores the same items")
    return repo, revision, path


class DatasetHub:
    """Dataset repos of the Hugging Face Hub; `fetch` takes any object with `commit` and `download`."""

    def commit(self, repo: str, revision: str) -> str:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo, revision=revision).sha

    def download(self, repo: str, commit: str, path: str) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo, path, repo_type="dataset", revision=commit))


def fetch(spec: str, to: str, hub=None) -> str:
    """Copy one file of a hub dataset, at its pinned revision, under `to` (folder or s3:// prefix); its URI.

    The revision is resolved to a commit first; the manifest beside the copy
    (source, commit, sha256, size) is removed before and written after it, so a
    half-copied file is never taken for a complete one.
    """
    repo, revision, path = parse_hub_spec(spec)
    hub = hub or DatasetHub()
    commit = hub.commit(repo, revision)
    local = hub.download(repo, commit, path)
    where = storage.join(to, "benchmarks", f"{repo.replace('/', '--')}@{revision}", path)
    storage.delete(where + MANIFEST_SUFFIX)
    storage.write_bytes(where, local.read_bytes())
    manifest = {
        "source": spec,
        "repo": repo,
        "revision": revision,
        "commit": commit,
        "path": path,
        "sha256": storage.sha256_file(local),
        "size": local.stat().st_size,
    }
    storage.write_text(where + MANIFEST_SUFFIX, json.dumps(manifest, indent=2) + "\n")
    return where
