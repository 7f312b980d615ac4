"""The request a teacher continues, and its answer read back into tasks.

A request is the pack's prompt, then the sampled seed tasks as a numbered list of blocks separated by `###`:

    ###
    1. Instruction: ...
    1. Input:
    <noinput>
    1. Output:
    ...
    ###
    4. Instruction:

It ends on the label of the next number, so the teacher writes tasks from there on and stops at the stop string
that would open the task after the last one. The labels stay English in every pack (the pack's prompt asks for
the contents in its language): one parser for every language, and labels a teacher follows reliably.

A response is cut at `###` into blocks; each comes back as a `Candidate` with its raw text, request and position,
parsed or marked `format` (no instruction/output labels in order) or `truncated` (the last block of a response
that ran out of tokens), so every block ends in exactly one place.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass

from barbarossa.languages import TASKS, LanguageError

SEPARATOR = "###"
NO_INPUT = "<noinput>"
LABELS = ("Instruction", "Input", "Output")
# a label at the start of a line, its number and spacing tolerated: "4. Instruction:", "4 . input :", "Output:"
_LABEL = re.compile(r"^[ \t]*(?:\d+[ \t]*[.)][ \t]*)?(instruction|input|output)[ \t]*:", re.IGNORECASE | re.MULTILINE)


def _block(number: int, task: dict) -> str:
    given = task["input"].strip() or NO_INPUT
    return (
        f"{SEPARATOR}\n{number}. Instruction: {task['instruction'].strip()}\n"
        f"{number}. Input:\n{given}\n{number}. Output:\n{task['output'].strip()}\n"
    )


def build_prompt(pack: dict, seeds: list[dict], tasks_per_request: int) -> str:
    """The pack's prompt for `tasks_per_request` tasks, the seeds as tasks 1..k, and the label of task k+1."""
    text = pack["selfinstruct"]["prompt"].strip()
    if not text:
        raise LanguageError(f"the {pack['code']} language pack has no [selfinstruct] prompt")
    blocks = "".join(_block(number, seed) for number, seed in enumerate(seeds, start=1))
    opening = text.replace(TASKS, str(tasks_per_request))
    return f"{opening}\n{blocks}{SEPARATOR}\n{len(seeds) + 1}. Instruction:"


def stop_strings(tasks_per_request: int) -> list[str]:
    """Where the teacher is stopped: as it opens the task after the last one wanted."""
    after = tasks_per_request + 1
    return [f"{after}. Instruction", f"{after}.Instruction"]


@dataclass(frozen=True)
class Candidate:
    """One block of a response: parsed into a task, or rejected by parsing (`rule`: format, truncated)."""

    request: int
    position: int  # the block's place in its response, from 0
    raw: str
    instruction: str = ""
    input: str = ""
    output: str = ""
    rule: str = ""
    detail: str = ""

    @property
    def row(self) -> dict:
        """The task as an instruction row."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output}

    def rejected(self, rule: str, detail: str = "") -> dict:
        """What the rejected rows file keeps of it: the rule and why, where it came from, its text."""
        row = {"rule": rule, "detail": detail}
        row.update((key, value) for key, value in asdict(self).items() if key not in row)
        return row


def _clean(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


def parse_block(block: str) -> dict | str:
    """{instruction, input, output} of one block, or why it does not parse. An absent input is no input."""
    labels = list(_LABEL.finditer(block))
    names = [match.group(1).lower() for match in labels]
    if names not in (["instruction", "input", "output"], ["instruction", "output"]):
        return "expected labels Instruction, Input, Output in order, found " + (", ".join(names) or "none")
    if block[: labels[0].start()].strip():
        return "text before the Instruction label"
    fields = {"input": ""}
    for match, after in zip(labels, [*labels[1:], None]):
        fields[match.group(1).lower()] = _clean(block[match.end() : after.start() if after else len(block)])
    if fields["input"].casefold() == NO_INPUT:
        fields["input"] = ""
    if not fields["instruction"]:
        return "empty instruction"
    return fields


def parse_response(text: str, first_number: int, finish_reason: str, request: int = 0) -> list[Candidate]:
    """Every block of a teacher's response (which continues task `first_number`'s Instruction label, or opens it
    again), parsed or rejected. With finish_reason "length" the last block was cut by the token limit:
    `truncated`, unless the response ended on a separator."""
    body = text.lstrip()
    if body.startswith(SEPARATOR):  # a chat model may open the next task itself, separator and label included
        body = body[len(SEPARATOR) :].lstrip()
    opening = "" if _LABEL.match(body) else f"{first_number}. Instruction: "
    blocks = (opening + body).split(SEPARATOR)
    ended_on_separator = not blocks[-1].strip()
    found = [block for block in blocks if block.strip()]
    candidates = []
    for position, block in enumerate(found):
        raw = block.strip()
        if finish_reason == "length" and position == len(found) - 1 and not ended_on_separator:
            candidates.append(Candidate(request, position, raw, rule="truncated", detail="the token limit cut it"))
            continue
        parsed = parse_block(block)
        if isinstance(parsed, str):
            candidates.append(Candidate(request, position, raw, rule="format", detail=parsed))
        else:
            candidates.append(Candidate(request, position, raw, **parsed))
    return candidates
