"""Spans a translator must not touch survive translation, or the row is flagged."""

import re

import pytest

from barbarossa.translate import protect


@pytest.mark.parametrize(
    "text, spans, moved",
    [
        ("Here:\n```python\nprint(42)\n```\nDone.", [("code_block", "```python\nprint(42)\n```")], None),
        ("Run `pip install torch==2.13.0` first.", [("inline_code", "`pip install torch==2.13.0`")], None),
        (
            "Docs at https://docs.python.org/3/ and www.example.az, mail anna@example.com.",
            [("url", "https://docs.python.org/3/"), ("url", "www.example.az"), ("email", "anna@example.com")],
            "Docs at www.example.az and https://docs.python.org/3/, mail anna@example.com.",
        ),
        (
            "Hello, {name}! {{count}} items, %s left, <br> here.",
            [("placeholder", "{name}"), ("placeholder", "{{count}}"), ("placeholder", "%s"), ("placeholder", "<br>")],
            "Hello, {{count}}! {name} items, %s left, <br> here.",
        ),
        (
            "Pay 1,200 at 10:30, that is 3.5% of 34000.",
            [("number", "1,200"), ("number", "10:30"), ("number", "3.5%"), ("number", "34000")],
            "Pay 10:30 at 1,200, that is 3.5% of 34000.",
        ),
    ],
)
def test_spans_are_masked_and_restored_exactly(text, spans, moved):
    masked, found = protect.protect(text)
    assert [(s["kind"], s["text"]) for s in found] == spans  # each span, whole, in the order it appears
    assert re.findall("⟦(\\d+)⟧", masked) == [str(i) for i in range(len(spans))]
    assert all(s["text"] not in masked for s in found)
    translated = masked.replace("Here", "Budur").replace("Done", "Hazır")  # a translator that leaves markers alone
    restored, problems = protect.restore(translated, found)
    assert problems == [] and restored == text.replace("Here", "Budur").replace(
        "Done", "Hazır"
    )  # character for character
    if moved:  # a translator that reorders the sentence: each span follows its own marker, not a position
        swapped = translated.replace("⟦0⟧", "⟦x⟧").replace("⟦1⟧", "⟦0⟧").replace("⟦x⟧", "⟦1⟧")
        assert protect.restore(swapped, found) == (moved, [])


def test_lost_duplicated_and_invented_markers_are_reported():
    masked, spans = protect.protect("Open https://example.com and call 112.")
    assert masked == "Open ⟦0⟧ and call ⟦1⟧."
    restored, problems = protect.restore("Açın ⟦1⟧ ⟦1⟧ ⟦7⟧", spans)
    assert problems == ["url 'https://example.com' lost", "number '112' duplicated", "unknown markers [7]"]
    assert restored.count("112") == 2


@pytest.mark.parametrize(
    "text, needed",
    [
        ("```\nx = 1\n```", False),
        ("12 * 7 + 5", False),
        ("", False),
        ("https://example.com", False),
        ("Translate me", True),
        ("Call `f()` now", True),
    ],
)
def test_only_text_with_words_outside_protected_spans_is_translated(text, needed):
    assert protect.needs_translation(text) is needed
