"""Spans a translator must not touch survive translation, or the row is flagged."""

import pytest

from barbarossa import protect


@pytest.mark.parametrize("text, kinds", [
    ("Here:\n```python\nprint(42)\n```\nDone.", ["code_block"]),
    ("Run `pip install torch==2.13.0` first.", ["inline_code"]),
    ("Docs at https://docs.python.org/3/ and www.example.az, mail anna@example.com.", ["url", "url", "email"]),
    ("Hello, {name}! {{count}} items, %s left, <br> here.", ["placeholder"] * 4),
    ("Pay 1,200 at 10:30, that is 3.5% of 34000.", ["number"] * 4),
])
def test_spans_are_masked_and_restored_exactly(text, kinds):
    masked, spans = protect.protect(text)
    assert [s["kind"] for s in spans] == kinds
    assert all(s["text"] not in masked for s in spans) and "⟦0⟧" in masked
    translated = masked.replace("Here", "Budur").replace("Done", "Hazır")  # a translator that leaves markers alone
    restored, problems = protect.restore(translated, spans)
    assert problems == [] and all(s["text"] in restored for s in spans)


def test_lost_duplicated_and_invented_markers_are_reported():
    masked, spans = protect.protect("Open https://example.com and call 112.")
    assert masked == "Open ⟦0⟧ and call ⟦1⟧."
    restored, problems = protect.restore("Açın ⟦1⟧ ⟦1⟧ ⟦7⟧", spans)
    assert problems == ["url 'https://example.com' lost", "number '112' duplicated", "unknown markers [7]"]
    assert restored.count("112") == 2


@pytest.mark.parametrize("text, needed", [
    ("```\nx = 1\n```", False), ("12 * 7 + 5", False), ("", False), ("https://example.com", False),
    ("Translate me", True), ("Call `f()` now", True),
])
def test_only_text_with_words_outside_protected_spans_is_translated(text, needed):
    assert protect.needs_translation(text) is needed
