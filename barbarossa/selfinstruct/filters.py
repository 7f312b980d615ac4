"""Which generated tasks are kept: one ordered pass, each task kept or rejected by exactly one rule.

`Pool(seeds, pack, settings, held_out).consider(task)` for every parsed block, in the order generated (request,
then position); a kept task joins the pool the later ones are compared with. The rules, cheapest first, so a
rejected task says the first thing wrong with it and the costly checks see only what the cheap ones let pass:

 1. truncated     the token limit cut the block (decided by parsing)
 2. format        the block has no Instruction / Output labels in order (decided by parsing)
 3. length        the instruction has fewer than min_words or more than max_words words (the pack's words)
 4. first_char    the instruction does not start with a letter (`str.isalpha`: Ə, Ş, Ç, İ, Қ are letters)
 5. blacklist     a word of the instruction starts with a blacklist stem of the pack (or is one of its whole
                  words): images, graphs, files, maps, drawing, video, audio, music, diagrams
 6. instance      Self-Instruct's instance rules: empty output, input equal to output, input or output ending
                  in ":"
 7. duplicate     instruction and input equal (casefolded, spaces collapsed) to a seed's or a kept task's
 8. contaminated  the prompt is a near-copy of a held-out or benchmark prompt (data/dedup.py's check, at
                  `contamination`)
 9. language      the pack's identifier (evaluate/langid.py) puts the instruction or the output in another
                  language. A field too short to tell (langid.too_short, the rule fidelity uses: fewer than
                  langid.MIN_WORDS words with letters) is not judged, and an undetermined one passes: a task is
                  dropped for what is seen, not for what cannot be.
                  The output is judged too, so a translation task whose answer is in English is rejected here.
10. similar       ROUGE-L F1 of the instruction with a seed's or a kept task's is above `similarity` (rouge.py)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from barbarossa.data import dedup
from barbarossa.evaluate import langid
from barbarossa.selfinstruct import rouge
from barbarossa.selfinstruct.prompt import Candidate
from barbarossa.selfinstruct.settings import SelfInstruct

RULES = (
    "truncated",
    "format",
    "length",
    "first_char",
    "blacklist",
    "instance",
    "duplicate",
    "contaminated",
    "language",
    "similar",
)


def blacklist_pattern(stems: list[str], whole_words: list[str]) -> re.Pattern | None:
    """One regex over folded text (rouge.fold): a stem at a word's start, or a whole word; spaces in an entry
    match any run of spaces ("go to")."""

    def alternatives(entries: list[str]) -> str:
        folded = sorted({" ".join(rouge.fold(entry).split()) for entry in entries}, key=len, reverse=True)
        return "|".join(re.escape(entry).replace(r"\ ", r"\s+") for entry in folded)

    parts = []
    if stems:
        parts.append(rf"(?<!\w)(?:{alternatives(stems)})")
    if whole_words:
        parts.append(rf"(?<!\w)(?:{alternatives(whole_words)})(?!\w)")
    return re.compile("|".join(parts)) if parts else None


def duplicate_key(task: dict) -> tuple[str, str]:
    return tuple(" ".join(rouge.fold(task[field]).split()) for field in ("instruction", "input"))


def instance_problem(task: dict) -> str:
    """Self-Instruct's checks of an instance: why it is not a usable one, or ''."""
    if not task["output"].strip():
        return "empty output"
    if task["input"].strip() and task["input"].strip() == task["output"].strip():
        return "input equal to output"
    for field in ("input", "output"):
        if task[field].rstrip().endswith(":"):
            return f"{field} ends in ':'"
    return ""


class Pool:
    """Seeds and kept tasks; `consider` decides each new task and records it as kept or rejected."""

    def __init__(
        self,
        seeds: list[dict],
        pack: dict,
        settings: SelfInstruct,
        held_out: dict[str, list[dict]] | None = None,
        language_of: Callable[[str], str] | None = None,
    ):
        self.settings = settings
        self.word = re.compile(pack["words"])
        texts = pack["selfinstruct"]
        self.blacklist = blacklist_pattern(texts["blacklist"], texts["blacklist_words"])
        self.near_copies = dedup.Index(held_out or {}, settings.contamination)
        identify = pack["identify"]
        self.language_of = language_of or (lambda text: langid.language_of(text, identify))
        self.language = langid.target_code(identify)
        self.similar = rouge.SimilarityPool()
        self.sources: list[str] = []  # what each similarity-pool entry is: "seed 3", "task 12"
        self.seen: set[tuple[str, str]] = set()
        self.kept: list[dict] = []
        self.rejected: list[dict] = []
        for number, seed in enumerate(seeds):
            self._remember(seed, f"seed {number}")

    def _remember(self, task: dict, source: str) -> None:
        self.similar.add(rouge.words(task["instruction"]))
        self.sources.append(source)
        self.seen.add(duplicate_key(task))

    def consider(self, task: Candidate) -> str | None:
        """The rule that rejects `task` (it is recorded in `rejected`), or None: it is kept (in `kept`, and in the
        pool every later task is compared with)."""
        rule, detail = (task.rule, task.detail) if task.rule else self.judge(task.row)
        if rule:
            self.rejected.append(task.rejected(rule, detail))
            return rule
        self._remember(task.row, f"task {len(self.kept)}")
        self.kept.append(task.row)
        return None

    def judge(self, task: dict) -> tuple[str, str]:
        """(rule, detail) of the first rule `task` breaks, or ('', '')."""
        for rule, check in (
            ("length", self._length),
            ("first_char", self._first_char),
            ("blacklist", self._blacklisted),
            ("instance", instance_problem),
            ("duplicate", self._duplicate),
            ("contaminated", self._contaminated),
            ("language", self._other_language),
            ("similar", self._similar),
        ):
            detail = check(task)
            if detail:
                return rule, detail
        return "", ""

    def _length(self, task: dict) -> str:
        count = len(self.word.findall(task["instruction"]))
        low, high = self.settings.min_words, self.settings.max_words
        return f"{count} words (allowed {low} to {high})" if not low <= count <= high else ""

    def _first_char(self, task: dict) -> str:
        first = task["instruction"][:1]
        return f"starts with {first!r}" if not first.isalpha() else ""

    def _blacklisted(self, task: dict) -> str:
        found = self.blacklist.search(rouge.fold(task["instruction"])) if self.blacklist else None
        return f"{found.group().strip()!r}" if found else ""

    def _duplicate(self, task: dict) -> str:
        return "the same instruction and input as a seed or a kept task" if duplicate_key(task) in self.seen else ""

    def _contaminated(self, task: dict) -> str:
        found = self.near_copies.nearest(task)
        return f"Jaccard {found[2]:.2f} with {found[0]} row {found[1]}" if found else ""

    def _other_language(self, task: dict) -> str:
        for field in ("instruction", "output"):
            if langid.too_short(task[field], self.word.pattern):
                continue
            found = self.language_of(task[field])
            if found and found != self.language:
                return f"{field} in {found}"
        return ""

    def _similar(self, task: dict) -> str:
        found = self.similar.most_similar(rouge.words(task["instruction"]), self.settings.similarity)
        return f"ROUGE-L {found[0]:.2f} with {self.sources[found[1]]}" if found else ""

    def counts(self) -> dict[str, int]:
        """Kept, and rejected by each rule (every rule listed, 0 where none)."""
        by_rule = Counter(row["rule"] for row in self.rejected)
        return {"kept": len(self.kept), **{rule: by_rule[rule] for rule in RULES}}
