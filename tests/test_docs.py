"""The docs name what exists: the README's code map covers every module, and no comment or doc names a
repository path that is not there (a comment still naming a module that was renamed or removed fails here)."""

import ast
import io
import os
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "barbarossa"

TOP_LEVEL = ("barbarossa", "flows", "configs", "containers", "benchmarks", "tests", "docs", "data")
STAGES = (
    "data",
    "models",
    "engine",
    "planning",
    "train",
    "evaluate",
    "llm",
    "judge",
    "decide",
    "infra",
    "translate",
    "selfinstruct",
)
# A path token starts where no path character precedes it (not inside a URL, an s3:// URI or a longer path).
_TOKEN = re.compile(r"(?<![\w./:~@-])[\w.\-/<>*{}\[\]…]+")
# A folder ends in "/", a file has an extension: `barbarossa/hf-token` (a secret's name) is neither.
_REPO_PATH = re.compile(rf"^(?:{'|'.join(TOP_LEVEL)})/(?:.*/$|.*\.\w+$)")
_MODULE_PATH = re.compile(rf"^(?:{'|'.join(STAGES)})/(?:[\w-]+/)*[\w-]+\.py$")
_PLACEHOLDER = re.compile(r"[<>*{}\[\]…]|\.\.")

CODE_DIRS = ("barbarossa", "flows", "containers", "benchmarks", "tests")
HASH_COMMENTED = ("Makefile", "containers/Dockerfile", ".ci/run")  # their `#` comments are checked too
SKIP_DIRS = {"runs", "build", "node_modules", "__pycache__"}


def path_tokens(text):
    """Tokens of `text` that name a repository path: a top-level folder first, or a stage folder and a .py file."""
    for match in _TOKEN.finditer(text):
        token = match.group().rstrip(".,:;")
        if _PLACEHOLDER.search(token):
            continue  # a glob or a placeholder: configs/profiles/*.toml, configs/languages/<code>.toml
        if _REPO_PATH.match(token) or _MODULE_PATH.match(token):
            yield token


def exists(token):
    """Relative to the repository root, or to barbarossa/ for a module path such as `train/loop.py`; a file the
    docs tell you to copy from an example (`configs/infra/batch.toml` from `batch.example.toml`) counts too."""
    for base in (ROOT, LIBRARY):
        path = base / token
        if path.exists() or path.with_suffix(".example" + path.suffix).exists():
            return True
    return False


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def broken_links(path, text):
    """Relative Markdown links of `text` (a line of the .md file `path`) whose target is not there."""
    for target in _LINK.findall(text):
        target = target.split("#")[0]
        external = "://" in target or target.startswith("mailto:")
        if target and not external and not (path.parent / target).exists():
            yield target


def comments_and_docstrings(path):
    """Every `#` comment and docstring of a Python file, as (line, text)."""
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return  # a file that does not parse fails every test that imports it; its paths are checked once it does
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.body[0].lineno, doc


def _files(suffix, under=ROOT):
    """The repository's files ending in `suffix`, outside hidden folders (.git, .venv, caches) and build output."""
    for folder, dirs, files in os.walk(under):
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in SKIP_DIRS or d.endswith(".egg-info")))
        yield from (Path(folder) / name for name in sorted(files) if name.endswith(suffix))


def doc_texts():
    """(file, line, text) of every comment and docstring in the code, of every .md and .toml file, and of the
    `#` comments of the Makefile, the Dockerfile and the CI script."""
    for folder in CODE_DIRS:
        for path in _files(".py", ROOT / folder):
            for line, text in comments_and_docstrings(path):
                yield path, line, text
    for suffix in (".md", ".toml"):
        for path in _files(suffix):
            for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                yield path, line, text
    for path in HASH_COMMENTED:
        for line, text in enumerate((ROOT / path).read_text(encoding="utf-8").splitlines(), 1):
            comment = re.search(r"(?:^|\s)#.*", text)
            if comment:
                yield ROOT / path, line, comment.group()


def code_map():
    """The README's `## Code map` section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Code map\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README.md has no '## Code map' section"
    return section.group(1)


def test_code_map_names_every_module_and_only_what_exists():
    named = set(path_tokens(code_map()))
    missing = [p for p in sorted(named) if not exists(p)]
    assert not missing, f"README code map names paths that do not exist: {missing}"

    metrics = LIBRARY / "evaluate" / "metrics"
    modules = {
        p.relative_to(ROOT).as_posix()
        for p in LIBRARY.rglob("*.py")
        if p.name != "__init__.py" and metrics not in p.parents and "__pycache__" not in p.parts
    }
    assert "barbarossa/evaluate/metrics/" in named, "README code map: list barbarossa/evaluate/metrics/"
    unlisted = sorted(modules - named)
    assert not unlisted, f"README code map leaves out modules: {unlisted}"


def test_no_comment_or_doc_names_a_missing_path():
    stale = []
    for path, line, text in doc_texts():
        missing = [token for token in path_tokens(text) if not exists(token)]
        if path.suffix == ".md":
            missing += broken_links(path, text)
        stale += [f"{path.relative_to(ROOT)}:{line}: {token}" for token in missing]
    assert not stale, "comments and docs name paths that do not exist:\n" + "\n".join(stale)


def test_path_tokens_catch_stale_module_paths():
    """The detector itself: module-relative and repository paths, not URLs, URIs, globs or placeholders."""
    text = (
        "see train/speed.py and engine/kernels.py; flows/finetune_flow.py, docs/settings.md. "
        "https://github.com/o/r/tests/x.py s3://bucket/data/x.jsonl configs/profiles/*.toml "
        "configs/languages/<code>.toml ~/.cache/barbarossa/gpu-leases/ runs/FinetuneFlow/<run>/data/"
    )
    found = list(path_tokens(text))
    assert found == ["train/speed.py", "engine/kernels.py", "flows/finetune_flow.py", "docs/settings.md"]
    assert [t for t in found if not exists(t)] == ["train/speed.py"]
