"""Spans a translator must not touch: code, URLs, e-mail addresses, numbers, placeholders.

Before translation each span is replaced by a marker (⟦0⟧, ⟦1⟧, ...); after it the
markers are put back. A marker that went missing or was duplicated means the
translator damaged the row, and the row is flagged instead of silently losing a
URL or a line of code. Text that is nothing but protected spans (pure code,
pure numbers) is not sent to a translator at all.
"""

from __future__ import annotations

import re

# Order matters: a code block may contain URLs and numbers; an e-mail contains dots and letters.
PATTERNS = [
    ("code_block", r"```.*?```"),
    ("inline_code", r"`[^`\n]+`"),
    ("url", r"\b(?:https?://|www\.)[^\s<>()\"']+[^\s<>()\"'.,;:!?]"),
    ("email", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    ("placeholder", r"\{\{[^{}]*\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}|%\(?[A-Za-z_]*\)?[sdif]|<[A-Za-z_][A-Za-z0-9_-]*>"),
    ("number", r"(?<![\w.])[-+]?\d+(?:[.,:/]\d+)*%?(?![\w])"),
]
_COMBINED = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in PATTERNS), re.DOTALL)
_MARKER = re.compile(r"⟦(\d+)⟧")


def marker(index: int) -> str:
    return f"⟦{index}⟧"


def protect(text: str) -> tuple[str, list[dict]]:
    """(text with markers, the spans they stand for: [{'kind', 'text'}])."""
    spans: list[dict] = []

    def replace(match: re.Match) -> str:
        spans.append({"kind": match.lastgroup, "text": match.group(0)})
        return marker(len(spans) - 1)

    return _COMBINED.sub(replace, text), spans


def restore(translated: str, spans: list[dict]) -> tuple[str, list[str]]:
    """(translation with the spans put back, problems: markers lost, duplicated or invented)."""
    found = [int(m) for m in _MARKER.findall(translated)]
    problems = []
    for index, span in enumerate(spans):
        count = found.count(index)
        if count != 1:
            problems.append(f"{span['kind']} {span['text'][:40]!r} {'lost' if count == 0 else 'duplicated'}")
    invented = sorted({i for i in found if i >= len(spans)})
    if invented:
        problems.append(f"unknown markers {invented}")
    restored = _MARKER.sub(
        lambda m: spans[int(m.group(1))]["text"] if int(m.group(1)) < len(spans) else m.group(0), translated
    )
    return restored, problems


def needs_translation(text: str) -> bool:
    """False for empty text and for text that is only protected spans, punctuation and whitespace."""
    masked, _ = protect(text)
    return bool(re.search(r"[^\W\d_]", _MARKER.sub("", masked)))
