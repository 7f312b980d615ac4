"""Load, validate, de-duplicate, fingerprint and split Alpaca-schema data.

Everything here runs in the flow's `start` step, before any model is loaded, so a
bad file costs seconds, not a fan-out of GPU jobs. Errors name the file, the
line (or row) and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from json.encoder import encode_basestring as _quote
from pathlib import Path

from barbarossa import languages, storage
from barbarossa.config import PROJECT_ROOT
from barbarossa.data import dedup
from barbarossa.errors import UserError

FIELDS = ("instruction", "input", "output")
NON_EMPTY = ("instruction", "output")
ON_BAD_ROWS = ("fail", "skip")
HELD_OUT = "(held-out)"  # the main eval set's name where extra sets are named too
BUNDLED = PROJECT_ROOT / "data" / "az_alpaca_sample.jsonl"
BUNDLED_ENGLISH = PROJECT_ROOT / "data" / "en_alpaca_sample.jsonl"  # written for the translation flow's tests
_HF_ID = re.compile(r"^(hf:)?[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")


class DataError(UserError):
    """Bad input data; the message says where (file, line/row, field) and why: one line, no traceback."""

    headline = "Bad data"


@dataclass(frozen=True)
class BadRow:
    source: str
    row: int
    field: str | None
    reason: str
    unit: str = "line"

    def __str__(self) -> str:
        where = f"{self.source}: {self.unit} {self.row}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.reason}"


@dataclass
class Dataset:
    """Validated rows of one source plus what was dropped on the way."""

    source: str
    records: list[dict]
    bad_rows: list[BadRow] = field(default_factory=list)
    duplicates: int = 0

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.records)


# --------------------------------------------------------------------------- reading


def _decode(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{source}: line {line}: not valid UTF-8 (byte {raw[err.start]:#04x})") from None


def _jsonl_rows(raw: bytes, source: str) -> Iterator[tuple[int, object]]:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, BadRow(source, number, None, f"not valid UTF-8 (byte {line[err.start]:#04x})")
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as err:
            yield number, BadRow(source, number, None, f"malformed JSON ({err.msg} at column {err.colno})")


def _json_rows(raw: bytes, source: str) -> Iterator[tuple[int, object]]:
    text = _decode(raw, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{source}: line {err.lineno}: malformed JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{source}: line 1: expected a JSON list of row objects, got {type(data).__name__}")
    yield from enumerate(data, start=1)


def _csv_rows(raw: bytes, source: str) -> Iterator[tuple[int, object]]:
    reader = csv.DictReader(io.StringIO(_decode(raw, source), newline=""))
    _check_columns(reader.fieldnames or [], source)
    for row in reader:
        if None in row:
            yield reader.line_num, BadRow(source, reader.line_num, None, "more cells than header columns")
            continue
        yield reader.line_num, row


def _parquet_rows(path: Path, source: str) -> Iterator[tuple[int, object]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise DataError(f"{source}: not a readable Parquet file ({err})") from None
    _check_columns(table.column_names, source)
    yield from enumerate(table.to_pylist(), start=1)


def _check_columns(columns: Iterable[str], source: str) -> None:
    missing = [name for name in FIELDS if name not in set(columns)]
    if missing:
        raise DataError(
            f"{source}: header: missing column(s) {', '.join(missing)}; "
            f"expected {', '.join(FIELDS)}, found {', '.join(columns) or 'none'}"
        )


def _hf_rows(dataset_id: str) -> Iterator[tuple[int, object]]:
    from datasets import load_dataset

    name = dataset_id.removeprefix("hf:")
    name, _, split = name.partition(":")
    try:
        dataset = load_dataset(name, split=split or "train")
    except Exception as err:
        raise DataError(f"{dataset_id}: could not load Hugging Face dataset ({err})") from None
    _check_columns(dataset.column_names, dataset_id)
    yield from enumerate(dataset, start=1)


def _file_rows(path: Path, source: str) -> tuple[str, Iterator[tuple[int, object]]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        if path.stat().st_size == 0:
            raise DataError(f"{source}: the file is empty")
        return "row", _parquet_rows(path, source)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{source}: the file is empty")
    if suffix in (".jsonl", ".ndjson"):
        return "line", _jsonl_rows(raw, source)
    if suffix == ".json":
        return "item", _json_rows(raw, source)
    if suffix == ".csv":
        return "line", _csv_rows(raw, source)
    raise DataError(f"{source}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")


def raw_rows(source: str) -> tuple[str, Iterator[tuple[int, object]]]:
    """(unit, rows) of a path, s3:// URI or Hugging Face dataset id."""
    if storage.is_s3(source):
        local = storage.download(source, Path(tempfile.mkdtemp(prefix="barbarossa-data-")) / Path(source).name)
        return _file_rows(local, source)
    path = Path(source)
    if path.exists():
        return _file_rows(path, source)
    if _HF_ID.match(source) and path.suffix.lower() not in (".jsonl", ".ndjson", ".json", ".csv", ".parquet"):
        return "row", _hf_rows(source)
    raise DataError(f"{source}: no such file (nor an s3:// URI or a Hugging Face dataset id)")


# --------------------------------------------------------------------------- validation


def clean_row(row: object, source: str, number: int, unit: str) -> dict | BadRow:
    """The row's three fields, NFC-normalised and stripped, or why it is bad."""
    if isinstance(row, BadRow):
        return row
    if not isinstance(row, dict):
        return BadRow(source, number, None, f"expected an object, got {type(row).__name__}", unit)
    clean = {}
    for name in FIELDS:
        if name not in row or row[name] is None:
            return BadRow(source, number, name, "missing field", unit)
        value = row[name]
        if not isinstance(value, str):
            return BadRow(source, number, name, f"expected a string, got {type(value).__name__}", unit)
        value = unicodedata.normalize("NFC", value).strip()
        if name in NON_EMPTY and not value:
            return BadRow(source, number, name, "empty", unit)
        clean[name] = value
    return clean


def load(source: str, on_bad_rows: str = "fail", language: dict | None = None) -> Dataset:
    """Read and validate one source ('bundled' = the sample the language pack ships, Azerbaijani by default);
    strict unless on_bad_rows='skip'."""
    bundled = str(languages.resolve(language["sample"])) if language else str(BUNDLED)
    source = {"bundled": bundled, "bundled-en": str(BUNDLED_ENGLISH)}.get(source, source)
    if on_bad_rows not in ON_BAD_ROWS:
        raise ValueError(f"on_bad_rows must be one of {ON_BAD_ROWS}, got {on_bad_rows!r}")
    unit, rows = raw_rows(source)
    records, bad, seen, duplicates = [], [], set(), 0
    for number, row in rows:
        cleaned = clean_row(row, source, number, unit)
        if isinstance(cleaned, BadRow):
            bad.append(cleaned)
            continue
        key = (cleaned["instruction"], cleaned["input"], cleaned["output"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        records.append(cleaned)
    if bad and on_bad_rows == "fail":
        more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0]}{more}. Fix the data or pass --on-bad-rows skip.")
    if not records:
        raise DataError(f"{source}: no usable rows ({len(bad)} bad, {duplicates} duplicates)")
    return Dataset(source, records, bad, duplicates)


def load_mix(spec: str, on_bad_rows: str = "fail", language: dict | None = None) -> tuple[Dataset, list[dict]]:
    """Several sources, comma-separated ("bundled,generated.jsonl"), read and validated each, joined in order.

    A row that an earlier source already has is a duplicate (counted, dropped), so mixing translated and
    generated data never trains a row twice. The mix — each source with its rows kept and its own
    fingerprint — goes into the data summary (and so the data card); the joined rows' fingerprint is the
    run's source fingerprint, so a different mix is a different fingerprint.
    """
    sources = [part.strip() for part in spec.split(",") if part.strip()]
    if not sources:
        raise DataError(f"--train-data {spec!r}: no source named")
    loaded = [load(source, on_bad_rows, language) for source in sources]  # every source validated before any join
    if len(loaded) == 1:
        return loaded[0], []
    records, seen, mix, duplicates, bad = [], set(), [], 0, []
    for data in loaded:
        kept = [r for r in data.records if _quoted(r) not in seen]
        seen.update(map(_quoted, kept))
        records += kept
        duplicates += data.duplicates + len(data.records) - len(kept)
        bad += data.bad_rows
        mix.append(
            {
                "source": data.source,
                "rows": len(kept),
                "repeats_dropped": len(data.records) - len(kept),
                "fingerprint": data.fingerprint,
            }
        )
    return Dataset(", ".join(sources), records, bad, duplicates), mix


# --------------------------------------------------------------------------- identity & split


def prompt_key(record: dict) -> str:
    """Content hash of what the model is asked; the unit of the train/eval split."""
    text = record["instruction"] + "\x00" + record["input"]
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _quoted(record: dict) -> tuple[str, str, str]:
    """The three fields as JSON strings, exactly as `json.dumps(..., ensure_ascii=False)` writes them.

    Quoting each field once and assembling rows from the pieces is what makes the
    fingerprints and split files of 50K rows cheap.
    """
    return _json(record["instruction"]), _json(record["input"]), _json(record["output"])


def _json(value) -> str:
    return _quote(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _fingerprint_quoted(quoted: Iterable[tuple[str, str, str]]) -> str:
    text = "".join(f"[{instruction}, {input_}, {output}]\n" for instruction, input_, output in quoted)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fingerprint(records: list[dict]) -> str:
    """Order-sensitive hash of the rows, recorded with every run.

    The hashed text is each row's JSON list of fields plus a newline; runs compare
    fingerprints across versions, so that text must never change.
    """
    return _fingerprint_quoted(map(_quoted, records))


def _holdout_by_key(key: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def in_holdout(record: dict, fraction: float, seed: int) -> bool:
    """Seeded content-hash bucket: the same row lands on the same side every time."""
    return _holdout_by_key(prompt_key(record), fraction, seed)


def split_holdout(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    held = [in_holdout(r, fraction, seed) for r in records]
    return [r for r, h in zip(records, held) if not h], [r for r, h in zip(records, held) if h]


@dataclass
class _Rows:
    """Validated rows with their prompt keys and quoted fields, each computed once (not once per use)."""

    records: list[dict]
    keys: list[str]
    quoted: list[tuple[str, str, str]]

    @classmethod
    def of(cls, records: list[dict]) -> _Rows:
        return cls(records, [prompt_key(r) for r in records], [_quoted(r) for r in records])

    def where(self, keep: list[bool]) -> _Rows:
        pick = [i for i, k in enumerate(keep) if k]
        return _Rows([self.records[i] for i in pick], [self.keys[i] for i in pick], [self.quoted[i] for i in pick])

    @property
    def fingerprint(self) -> str:
        return _fingerprint_quoted(self.quoted)

    def jsonl(self) -> str:
        """Same text as `to_jsonl(self.records)` (validated records hold exactly FIELDS, in order)."""
        return "".join(f'{{"instruction": {i}, "input": {x}, "output": {o}}}\n' for i, x, o in self.quoted)


# --------------------------------------------------------------------------- the start step


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def read_jsonl(uri: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_bytes(uri).decode("utf-8").splitlines() if line]


def _write_extra(out_root: str, name: str, extra: Dataset) -> dict:
    rows = _Rows.of(extra.records)
    uri = storage.write_text(storage.join(out_root, "data", "extra", f"{name}.jsonl"), rows.jsonl())
    return {
        "name": name,
        "source": extra.source,
        "rows": len(extra.records),
        "fingerprint": rows.fingerprint,
        "uri": uri,
    }


def _without_near_copies(train: _Rows, eval_sets: dict[str, list[dict]], threshold: float) -> tuple[_Rows, dict]:
    """Training rows minus the near-copies of any eval prompt (dedup.py), and what the summary says about them."""
    near = dedup.find(train.records, eval_sets, threshold)
    removed = {match.train for match in near}
    kept = train.where([row not in removed for row in range(len(train.records))]) if removed else train
    return kept, dedup.report(near, train.records, eval_sets, threshold)


def prepare(
    train_source: str,
    eval_source: str | None,
    out_root: str,
    *,
    on_bad_rows: str = "fail",
    eval_fraction: float = 0.1,
    seed: int = 0,
    extra_sets: list[dict] | None = None,
    near_duplicate_threshold: float = 0.0,
    dev_rows: int = 0,
    language: dict | None = None,
) -> dict:
    """Validate the data, carve or load the eval set, decontaminate training, write both splits.

    Training rows whose prompt is in the eval set are removed; with a
    `near_duplicate_threshold` (the profile's; 0 here, off, so a caller has to
    ask for it) so are those that are near-copies of a prompt of the eval set
    or of any extra eval set (see dedup.py). Returns a small JSON-able summary
    with the URIs of the split files; this, not the rows, is what the flow passes on.
    `language` (a language pack) names the bundled sample and rides in the summary:
    every later step renders prompts and judges fidelity by it. `train_source` may name several
    sources, comma-separated (`load_mix`): the summary's `train_mix` says what each gave.
    """
    near_duplicate_threshold = dedup.check_threshold(near_duplicate_threshold)
    train_data, mix = load_mix(train_source, on_bad_rows, language)
    eval_data = load(eval_source, on_bad_rows, language) if eval_source else None
    source = _Rows.of(train_data.records)
    if eval_data is None:
        held_flags = [_holdout_by_key(key, eval_fraction, seed) for key in source.keys]
        train, held = source.where([not h for h in held_flags]), source.where(held_flags)
        if not held.records:
            raise DataError(f"{train_source}: the held-out split is empty; raise eval_fraction or add rows")
        eval_origin = f"held out from {train_source} ({eval_fraction:.0%}, seed {seed})"
    else:
        train, held = source, _Rows.of(eval_data.records)
        eval_origin = eval_source
    eval_keys = set(held.keys)
    kept = train.where([key not in eval_keys for key in train.keys])
    overlap, train = len(train.records) - len(kept.records), kept
    extras = [
        (entry["name"], load(entry["source"], on_bad_rows)) for entry in extra_sets or []
    ]  # validated before any write
    if HELD_OUT in dict(extras):
        raise DataError(f"extra eval set name {HELD_OUT!r} is taken by the main eval set; rename it")
    eval_sets = {HELD_OUT: held.records, **{name: extra.records for name, extra in extras}}
    train, near_report = _without_near_copies(train, eval_sets, near_duplicate_threshold)
    if not train.records:
        raise DataError(f"{train_source}: no training rows left after removing the eval set and its near-copies")
    dev = None
    if dev_rows:  # early stopping's dev split: from the training rows, never the held-out ones
        if dev_rows >= len(train.records) // 2:
            raise DataError(
                f"{train_source}: dev_rows = {dev_rows} would take half or more of the "
                f"{len(train.records)} training rows"
            )
        ranked = sorted(
            range(len(train.keys)), key=lambda i: hashlib.sha256(f"dev:{seed}:{train.keys[i]}".encode()).digest()
        )
        chosen = set(ranked[:dev_rows])
        dev, train = (
            train.where([i in chosen for i in range(len(train.keys))]),
            train.where([i not in chosen for i in range(len(train.keys))]),
        )
    train_uri = storage.write_text(storage.join(out_root, "data", "train.jsonl"), train.jsonl())
    eval_uri = storage.write_text(storage.join(out_root, "data", "eval.jsonl"), held.jsonl())
    bad = train_data.bad_rows + (eval_data.bad_rows if eval_data else [])
    return {
        "train_uri": train_uri,
        "eval_uri": eval_uri,
        "train_source": train_source,
        "eval_source": eval_origin,
        "train_rows": len(train.records),
        "eval_rows": len(held.records),
        "train_fingerprint": train.fingerprint,
        "eval_fingerprint": held.fingerprint,
        "source_fingerprint": source.fingerprint,
        "duplicates_removed": train_data.duplicates + (eval_data.duplicates if eval_data else 0),
        "eval_overlap_removed": overlap,
        **near_report,
        "bad_rows_skipped": len(bad),
        **({"train_mix": mix} if mix else {}),
        "extra_sets": [_write_extra(out_root, name, extra) for name, extra in extras],
        **(
            {
                "dev_uri": storage.write_text(storage.join(out_root, "data", "dev.jsonl"), dev.jsonl()),
                "dev_rows": len(dev.records),
                "dev_fingerprint": dev.fingerprint,
            }
            if dev
            else {}
        ),
        "bad_rows": [asdict(b) | {"message": str(b)} for b in bad[:50]],
        **({"language": language} if language else {}),
    }


LENGTH_BINS = (0, 5, 10, 20, 40, 80, 160, 320)


def length_histogram(records: list[dict], bins: tuple[int, ...] = LENGTH_BINS) -> list[dict]:
    """Words per field, counted into bins ('0-4', ..., '320+'): small enough for a card at any data size."""
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(bins, bins[1:])] + [f"{bins[-1]}+"]
    counts = {(field, label): 0 for field in FIELDS for label in labels}
    for record in records:
        for name in FIELDS:
            words = len(record[name].split())
            index = sum(words >= edge for edge in bins) - 1
            counts[(name, labels[index])] += 1
    return [
        {"field": field, "words": label, "order": labels.index(label), "rows": n}
        for (field, label), n in counts.items()
    ]
