"""No function or method in barbarossa/ longer than LIMIT lines: a long one is a recipe waiting to be split.

A function's length here is its code: from the first statement after the docstring to its last line (comments and
blank lines inside included). The signature and docstring are left out — a function that says why, or takes its
parameters one per line as the formatter writes them, is not longer for it.
"""

import ast

from conftest import ROOT

LIMIT = 80


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = function.body
    documented = (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    first = body[1] if documented else body[0]
    return function.end_lineno - first.lineno + 1


def lengths(root=ROOT / "barbarossa") -> list[tuple[str, int, str, int]]:
    """(file, line, name, length) of every function and method, nested ones included."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((str(path.relative_to(ROOT)), node.lineno, node.name, code_lines(node)))
    return found


def test_no_function_in_the_library_is_longer_than_the_limit():
    offenders = [f"{file}:{line} {name} ({length} lines)" for file, line, name, length in lengths() if length > LIMIT]
    assert not offenders, f"longer than {LIMIT} lines — split into steps:\n" + "\n".join(offenders)


def test_the_length_counts_code_not_the_signature_or_docstring():
    source = 'def f(\n    a,\n    b,\n):\n    """Why.\n\n    More.\n    """\n    x = a\n\n    return x + b\n'
    assert code_lines(ast.parse(source).body[0]) == 3
    assert code_lines(ast.parse("def g():\n    pass\n").body[0]) == 1
    assert code_lines(ast.parse('def h():\n    """Only a docstring."""\n').body[0]) == 1
