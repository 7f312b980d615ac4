"""English → Azerbaijani (or any pair) translation of Alpaca rows: backends, cache, integrity and QA.

- Backends share one small interface (`name`, `model`, `source`, `target`,
  `translate(texts) -> texts`): AWS Translate through boto3, and a local
  transformers seq2seq model (NLLB / M2M-100 language codes, or a T5-style prefix).
- Every text is protected first (`protect.py`) and restored after.
- Translations are cached by content (text + backend + model + language pair),
  in a local folder or under an S3 prefix, so a re-run or a resumed shard costs
  nothing for rows already done.
- Each row gets QA checks with reasons; the policy (drop or keep-and-flag) is config.
- `check_backend` runs first in the flow's `start`: a backend this machine
  cannot use stops there in one line that says what to set.
"""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from pathlib import Path

from barbarossa import languages, storage
from barbarossa.data.instructions import FIELDS
from barbarossa.evaluate import langid
from barbarossa.infra.compute import Misconfigured, aws_problems
from barbarossa.models.families import FAMILIES
from barbarossa.translate import protect

THROTTLED = ("ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException", "LimitExceededException")
AWS_MAX_BYTES = 10_000  # TranslateText request limit (UTF-8 bytes)


class AwsTranslate:
    """AWS Translate, one TranslateText call per text (split by paragraph above the request limit)."""

    name = "aws-translate"

    def __init__(self, source: str = "en", target: str = "az", client=None, max_attempts: int = 6, sleep=time.sleep):
        import boto3
        from botocore.config import Config

        self.source, self.target, self.model = source, target, "aws-translate"
        self.client = client or boto3.client(
            "translate", config=Config(retries={"mode": "adaptive", "max_attempts": 3})
        )
        self.max_attempts, self.sleep, self.calls = max_attempts, sleep, 0

    def _call(self, text: str) -> str:
        from botocore.exceptions import ClientError

        for attempt in range(self.max_attempts):
            try:
                self.calls += 1
                return self.client.translate_text(
                    Text=text, SourceLanguageCode=self.source, TargetLanguageCode=self.target
                )["TranslatedText"]
            except ClientError as err:
                if err.response["Error"]["Code"] not in THROTTLED or attempt == self.max_attempts - 1:
                    raise
                self.sleep(min(30.0, 0.5 * 2**attempt))  # exponential back-off on throttling
        raise AssertionError("unreachable")

    def translate(self, texts: list[str]) -> list[str]:
        return ["\n\n".join(self._call(part) for part in split_for_limit(text, AWS_MAX_BYTES)) for text in texts]


def split_for_limit(text: str, limit: int) -> list[str]:
    """Paragraph-aligned pieces under `limit` UTF-8 bytes (a single huge paragraph is cut by bytes)."""
    pieces, current = [], ""
    for paragraph in text.split("\n\n"):
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate.encode()) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while len(paragraph.encode()) > limit:
            cut = paragraph.encode()[:limit].decode(errors="ignore")
            pieces.append(cut)
            paragraph = paragraph[len(cut) :]
        current = paragraph
    return pieces + ([current] if current else [])


class LocalSeq2Seq:
    """A transformers seq2seq MT model from a local folder (NLLB, M2M-100, or a T5-style model with a prefix)."""

    name = "local-seq2seq"

    def __init__(
        self,
        folder: str,
        source: str = "eng_Latn",
        target: str = "azj_Latn",
        prefix: str = "",
        batch_size: int = 8,
        max_new_tokens: int = 256,
    ):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from barbarossa.engine import loading

        self.model, self.source, self.target, self.prefix = folder, source, target, prefix
        local = folder if ":" not in folder or folder.startswith("/") else str(loading.resolve(folder))
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.net = AutoModelForSeq2SeqLM.from_pretrained(local).eval()
        self.batch_size, self.max_new_tokens, self.calls = batch_size, max_new_tokens, 0
        if hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = source

    def _forced_bos(self):
        token_id = self.tokenizer.convert_tokens_to_ids(self.target) if self.target else None
        unknown = self.tokenizer.unk_token_id
        return token_id if token_id is not None and token_id != unknown else None

    def translate(self, texts: list[str]) -> list[str]:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [self.prefix + t for t in texts[start : start + self.batch_size]]
            self.calls += 1
            batch = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=512)
            with torch.no_grad():
                generated = self.net.generate(
                    **batch, max_new_tokens=self.max_new_tokens, do_sample=False, forced_bos_token_id=self._forced_bos()
                )
            out += self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return out


def parse_settings(text: str) -> dict:
    """Metaflow Config parser for the translate config: TOML (a file) or JSON (`--config-value`), validated."""
    settings = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    missing = {"shard_rows", "qa_policy", "backend"} - set(settings)
    if missing:
        raise ValueError(f"translate config: missing {', '.join(sorted(missing))}")
    if settings["qa_policy"] not in ("drop", "flag"):
        raise ValueError(f"translate config: qa_policy must be 'drop' or 'flag', got {settings['qa_policy']!r}")
    if settings["backend"].get("kind") not in ("aws", "local"):
        raise ValueError(
            f"translate config: [backend] kind must be 'aws' or 'local', got {settings['backend'].get('kind')!r}"
        )
    return settings


LOCAL_CONFIG = "configs/translate/nllb.toml"  # what to switch to when AWS is not set up


class BackendError(Misconfigured):
    """A translate backend this machine cannot use; the message says what to set."""

    headline = "Translate backend"


def check_backend(spec: dict) -> None:
    """Raise BackendError, one line saying what to set, when the [backend] table cannot work here.

    Run in `start`, on the same kind of machine as the `translate` tasks:
    without it a missing region or model is botocore's NoRegionError or a
    transformers OSError in every shard task, after the shards were written.
    Only what needs no network call to the service is checked: for AWS that
    boto3 resolves a region and credentials (not that they are allowed to
    translate); for a local model that its folder holds a config.json. A
    `hf:` or `wheel-gguf:` source is fetched by the task and not checked here.
    """
    kind = spec.get("kind")
    if kind == "aws":
        problems = aws_problems()
        if problems:
            raise BackendError(
                f"translate backend 'aws': {'; '.join(problems)}, or use --config translate {LOCAL_CONFIG}"
            )
    elif kind == "local":
        folder = spec.get("folder")
        fix = "set [backend] folder in the translate config to a downloaded seq2seq checkpoint (NLLB, M2M-100)"
        if not folder:
            raise BackendError(f"translate backend 'local': no model folder — {fix}")
        if ":" in folder and not folder.startswith("/"):  # a roster-style source, as LocalSeq2Seq resolves it
            scheme, _, family = folder.partition(":")
            if scheme == "tiny" and getattr(FAMILIES.get(family), "task", None) != "seq2seq":
                raise BackendError(
                    f"translate backend 'local': {folder!r} is no tiny seq2seq model — use tiny:t5, or {fix}"
                )
            return
        if not Path(folder).is_dir():
            raise BackendError(f"translate backend 'local': model folder {folder} does not exist — {fix}")
        if not (Path(folder) / "config.json").is_file():
            raise BackendError(
                f"translate backend 'local': {folder} holds no config.json, so it is no model folder — {fix}"
            )
    else:
        raise BackendError(f"translate backend kind must be 'aws' or 'local', got {kind!r} — set [backend] kind")


def backend_spec(spec: dict, language: dict) -> dict:
    """The config's [backend] table with its target language from the language pack (AWS Translate's code, or
    FLORES/NLLB's for a local model), unless the table names a target itself (M2M-100's codes, say)."""
    code = language["codes"].get("aws" if spec.get("kind") == "aws" else "flores")
    if "target" in spec or not code:  # named in the table, even as "" (a T5-style model told by its prefix)
        return spec
    return {**spec, "target": code}


def make_backend(spec: dict):
    """A backend from the translate config's [backend] table."""
    kind = spec.get("kind")
    options = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "aws":
        return AwsTranslate(**options)
    if kind == "local":
        return LocalSeq2Seq(**options)
    raise ValueError(f"translate backend kind must be 'aws' or 'local', got {kind!r}")


class Cache:
    """Content-addressed translations under a local folder or an S3 prefix."""

    def __init__(self, root: str, backend):
        self.root, self.identity = root, [backend.name, backend.model, backend.source, backend.target]
        self.hits = self.misses = 0

    def key(self, text: str) -> str:
        return hashlib.sha256(json.dumps(self.identity + [text], ensure_ascii=False).encode()).hexdigest()

    def _uri(self, key: str) -> str:
        return storage.join(self.root, key[:2], f"{key}.txt")

    def get(self, text: str) -> str | None:
        uri = self._uri(self.key(text))
        if storage.exists(uri):
            self.hits += 1
            return storage.read_bytes(uri).decode("utf-8")
        self.misses += 1
        return None

    def put(self, text: str, translation: str) -> None:
        storage.write_text(self._uri(self.key(text)), translation)


def translate_texts(texts: list[str], backend, cache: Cache) -> list[str]:
    """Translations of protected texts, from the cache where possible; only misses reach the backend."""
    found = {t: cache.get(t) for t in dict.fromkeys(texts)}
    missing = [t for t, v in found.items() if v is None]
    if missing:
        for text, translation in zip(missing, backend.translate(missing)):
            cache.put(text, translation)
            found[text] = translation
    return [found[t] for t in texts]


CHECKS = ("protected_span", "empty", "length_ratio", "line_breaks", "untranslated")


def qa_checks(source: dict, translated: dict, problems: dict[str, list[str]], detector, ratio=(0.5, 2.5)) -> list[dict]:
    """What is suspect about a translated row: [{'check' (one of CHECKS), 'reason'}]; empty when it passed."""
    found = []

    def flag(check: str, field: str, detail: str) -> None:
        found.append({"check": check, "reason": f"{field}: {detail}"})

    for field in FIELDS:
        src, out = source[field], translated[field]
        if problems.get(field):
            flag("protected_span", field, "protected span damaged (" + "; ".join(problems[field]) + ")")
        if src.strip() and not out.strip():
            flag("empty", field, "empty translation")
            continue
        if not protect.needs_translation(src):
            continue
        if len(src) >= 20 and not ratio[0] <= len(out) / len(src) <= ratio[1]:
            flag("length_ratio", field, f"length ratio {len(out) / len(src):.2f} outside {ratio[0]}–{ratio[1]}")
        if src.count("\n") != out.count("\n"):
            flag("line_breaks", field, f"{src.count(chr(10))} line breaks became {out.count(chr(10))}")
        if len(out.split()) >= 3 and detector(out) == "en":
            flag("untranslated", field, "still English")
    return found


def translate_shard(rows: list[dict], backend, cache: Cache) -> list[dict]:
    """[{'row': translated row, 'source': English row, 'problems': {field: [...]}, 'verbatim': bool}].

    Texts are protected, translated once each (cache first), and restored;
    fields that need no translation (pure code, numbers, empty) are kept verbatim.
    """
    needed = [{f: protect.needs_translation(r[f]) for f in FIELDS} for r in rows]
    protected = [{f: protect.protect(r[f]) for f in FIELDS} for r in rows]
    todo = [parts[f][0] for parts, need in zip(protected, needed) for f in FIELDS if need[f]]
    done = dict(zip(todo, translate_texts(todo, backend, cache)))
    results = []
    for row, parts, need in zip(rows, protected, needed):
        out, problems = {}, {}
        for field, (masked, spans) in parts.items():
            if need[field]:
                out[field], problems[field] = protect.restore(done[masked], spans)
            else:
                out[field] = row[field]
        results.append({"row": out, "source": row, "problems": problems, "verbatim": not any(need.values())})
    return results


def check_shard(results: list[dict], detector=None, identify: dict | None = None) -> list[dict]:
    """The shard's results with QA `flags` added (see `qa_checks`); language by the eval's own identifier, as the
    language pack's [identify] table says (None: the default pack's)."""
    if detector is None:
        identify = identify or languages.load()["identify"]
        detector = lambda text: langid.language_of(text, identify)  # noqa: E731
    return [{**r, "flags": qa_checks(r["source"], r["row"], r["problems"], detector)} for r in results]


def apply_policy(results: list[dict], policy: str) -> tuple[list[dict], dict]:
    """(rows to publish, counts) — 'drop' removes flagged rows, 'flag' keeps them with their reasons in `qa`.

    A row whose instruction or output came back empty is never published: it
    would break the schema the fine-tune flow validates (counted as unusable).
    """
    if policy not in ("drop", "flag"):
        raise ValueError(f"QA policy must be 'drop' or 'flag', got {policy!r}")
    kept = []
    counts = {
        "rows": len(results),
        "flagged": 0,
        "verbatim": 0,
        "unusable": 0,
        "by_check": dict.fromkeys(CHECKS, 0),
    }
    for result in results:
        counts["verbatim"] += result["verbatim"]
        for check in {f["check"] for f in result["flags"]}:
            counts["by_check"][check] += 1
        if not result["flags"]:
            kept.append(result["row"])
            continue
        counts["flagged"] += 1
        if not (result["row"]["instruction"].strip() and result["row"]["output"].strip()):
            counts["unusable"] += 1
        elif policy == "flag":
            kept.append({**result["row"], "qa": [f["reason"] for f in result["flags"]]})
    counts["published"] = len(kept)
    return kept, counts


def shards(rows: list[dict], size: int) -> list[list[dict]]:
    if size < 1:
        raise ValueError(f"shard_rows must be positive, got {size}")
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def dataset_card(summary: dict, counts: dict, backend: dict, policy: str, language: dict | None = None) -> str:
    """README.md for a translated dataset: where it came from, how, and what QA found."""
    language = language or languages.load()
    checks = "\n".join(f"| {check} | {n} |" for check, n in counts["by_check"].items())
    return f"""---
language:
- {language["code"]}
task_categories:
- text-generation
tags:
- alpaca
- machine-translated
- barbarossa
---
# {language["name"]} Alpaca-style instructions (machine-translated)

Translated from `{summary["source"]}` (fingerprint `{summary["source_fingerprint"]}`) with
`{backend.get("kind")}` ({backend.get("folder", backend.get("source", ""))} → {backend.get("target", "")}).
Rows: {counts["rows"]} in, {counts["published"]} published (QA policy `{policy}`), {counts["flagged"]} flagged
({counts["unusable"]} unusable: empty instruction or output, never published), {counts["verbatim"]} kept verbatim
(pure code or numbers). Fingerprint of this file: `{summary["fingerprint"]}`.

Code blocks, inline code, URLs, e-mail addresses, numbers and placeholders were protected during
translation and restored after; a row whose protected spans did not survive is flagged.

| QA check | rows flagged |
|---|---|
{checks}

Machine translation carries errors and English-centric content; review before training on it.
"""


def publish_dataset(rows: list[dict], summary: dict, counts: dict, settings: dict, root: str) -> dict:
    """Write the dataset under `<root>/datasets/<fingerprint>/` (JSONL + card); its URI and fingerprint."""
    from barbarossa.data import instructions

    if not rows:
        raise ValueError(f"no rows left to publish ({counts['flagged']} of {counts['rows']} flagged, policy drop)")
    fingerprint = instructions.fingerprint([{f: r[f] for f in FIELDS} for r in rows])
    folder = storage.join(root, "datasets", fingerprint)
    language = languages.load(settings.get("language", languages.DEFAULT))
    uri = storage.write_text(storage.join(folder, f"{language['code']}_alpaca.jsonl"), instructions.to_jsonl(rows))
    card = dataset_card(
        {**summary, "fingerprint": fingerprint}, counts, settings["backend"], settings["qa_policy"], language
    )
    storage.write_text(storage.join(folder, "README.md"), card)
    return {"uri": uri, "fingerprint": fingerprint, "rows": len(rows)}


def qa_card(counts: dict, results: list[dict], dataset: dict, examples: int = 3) -> list:
    """The join step's card: counts per check and a few flagged rows before/after."""
    from metaflow.cards import Markdown, Table

    parts = [
        Markdown("# Translation QA"),
        Markdown(
            f"{counts['rows']} rows, {counts['flagged']} flagged, {counts['verbatim']} verbatim, "
            f"{counts['published']} published → `{dataset['uri']}`"
        ),
        Table([[check, str(n)] for check, n in counts["by_check"].items()], headers=["check", "rows"]),
    ]
    flagged = [r for r in results if r["flags"]][:examples]
    if flagged:
        parts += [
            Markdown("## Flagged examples"),
            Table(
                [
                    [r["source"]["instruction"], r["row"]["instruction"], "; ".join(f["reason"] for f in r["flags"])]
                    for r in flagged
                ],
                headers=["English", "translation", "why"],
            ),
        ]
    return parts


def announce(event: str, dataset: dict) -> None:
    """Tell deployed flows that a dataset is ready (Argo Events); the fine-tune flow's @trigger listens."""
    from metaflow.integrations import ArgoEvent

    ArgoEvent(name=event).publish(payload={"dataset_uri": dataset["uri"], "fingerprint": dataset["fingerprint"]})
