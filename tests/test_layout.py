"""The library's layout is its pipeline: every import points to the same or an earlier stage, and none loops.

Imports are read from the source (every `import` / `from ... import`, also those inside functions), so an
import kept lazy to hide a cycle or an upward reach is caught too.
"""

import ast
import tomllib
from pathlib import Path

from conftest import ROOT

LIBRARY = ROOT / "barbarossa"
# Each stage's level: a module imports its own stage or a lower level only. train and evaluate share a level, so
# neither imports the other. The foundation modules are used by every stage; the top (cli.py, and reporting.py,
# which the flows and the cli print through) sits on top of everything.
LEVEL = {
    "foundation": 0,
    "data": 1,
    "models": 2,
    "engine": 3,
    "planning": 4,
    "train": 5,
    "evaluate": 5,
    "llm": 5.5,  # the teacher: above evaluate, whose decoding its local backend runs; below decide, whose judge asks it
    "judge": 5.7,  # pairwise verdicts through llm, its numbers on evaluate's bootstrap; decide puts them on the rows
    "decide": 6,
    "infra": 7,
    "translate": 8,
    "selfinstruct": 8,
    "top": 9,
}
STAGES = list(LEVEL)
FOUNDATION = {
    "barbarossa",
    "barbarossa.config",
    "barbarossa.console",
    "barbarossa.errors",
    "barbarossa.languages",
    "barbarossa.metric_registry",
    "barbarossa.storage",
}
TOP = {"barbarossa.cli", "barbarossa.reporting", "barbarossa.settings_reference"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    if module in FOUNDATION:
        return "foundation"
    if module in TOP:
        return "top"
    return module.split(".")[1]


def library_modules() -> dict[str, Path]:
    return {module_name(path): path for path in LIBRARY.rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The library modules this file imports (a `from pkg import mod` names the module, not the package)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {name for name in found if name in modules and name != module_name(path)}


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def test_every_library_module_belongs_to_a_known_stage():
    unknown = {m for m in library_modules() if stage_of(m) not in STAGES}
    assert not unknown, f"modules outside the stages {STAGES}: {sorted(unknown)}"


def test_no_module_imports_a_later_stage_or_a_sibling():
    upward = [
        f"{module} ({stage_of(module)}) imports {target} ({stage_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if stage_of(target) != stage_of(module) and LEVEL[stage_of(target)] >= LEVEL[stage_of(module)]
    ]
    assert not upward, "imports must point to the same stage or a lower level:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node))), None)


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle_and_the_stage_check_an_upward_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert stage_of("barbarossa.train.loop") == "train" and stage_of("barbarossa.storage") == "foundation"
    assert stage_of("barbarossa.reporting") == stage_of("barbarossa.cli") == "top"
    assert LEVEL["train"] == LEVEL["evaluate"]  # siblings: what both need lives below them


def test_tests_mirror_the_library():
    """Each stage's tests live in tests/<stage>/; no test folder names a stage the library lacks."""
    stages = {p.name for p in LIBRARY.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and any(p.glob("test_*.py"))}
    assert folders <= stages, f"test folders without a library stage: {sorted(folders - stages)}"
    assert stages <= folders, f"library stages without tests: {sorted(stages - folders)}"


def test_every_library_package_is_installed():
    """pyproject's package list names every folder of the library: one left out is missing from the wheel and the
    training image, though every test here (run from the checkout) passes."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in LIBRARY.rglob("__init__.py")}
    assert found == listed, f"not installed: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
