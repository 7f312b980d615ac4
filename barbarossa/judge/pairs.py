"""Pairs judged in both orders: the pack's judge prompt, one verdict per order, and the two read back as a win, a
loss or a tie for the candidate.

A judge prefers the answer shown first (or second) and the longer answer; showing each pair both ways and calling
a pair whose two verdicts disagree a tie takes the position out (the length is taken out by numbers.py). A verdict
is read from the label's log-probabilities where the server returns them (the probability of A against B at the
first generated token whose likeliest reading is a label: AlpacaEval's idea), else from the text: the last
`[[A]]`, `[[B]]` or `[[C]]` in it. A reply with neither is `unparsed`, and its pair counts in no rate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from barbarossa.errors import UserError
from barbarossa.judge.settings import Judge
from barbarossa.llm import Client, Completion
from barbarossa.llm.client import request

LABELS = ("A", "B", "C")  # A: the answer shown first is better; B: the second; C: a tie
TEXT_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
PLACEHOLDER = re.compile(r"\{(instruction|input|reference|answer_a|answer_b)\}")
OUTCOME = {"win": 1.0, "tie": 0.5, "loss": 0.0}  # the candidate's score per pair (ties count half)


class JudgeError(UserError):
    """The judge cannot be asked as configured: a pack without a judge prompt, answers that do not line up."""

    headline = "Judge"


@dataclass(frozen=True)
class Verdict:
    """One order's reading: the label ("A", "B", "C" or None: unparsed), how it was read ("logprobs", "text",
    "identical"), and P(A) against B where log-probabilities gave it."""

    label: str | None
    read_from: str
    p_first: float | None = None


@dataclass(frozen=True)
class Pair:
    """One prompt judged: the candidate's and the other's answers, the verdicts with the candidate first and
    second, and the outcome for the candidate ("win", "loss", "tie", or None when a verdict was unparsed)."""

    instruction: str
    candidate: str
    other: str
    candidate_first: Verdict
    candidate_second: Verdict
    outcome: str | None


@dataclass
class Judgement:
    """Every pair of one comparison (a candidate against its base, or its last release), with what it cost."""

    model: str
    pairs: list[Pair] = field(default_factory=list)
    calls: int = 0  # requests sent to the judge (retries included); 0 when every verdict came from the cache
    tokens: int = 0  # prompt and completion tokens of those requests

    @property
    def parsed(self) -> list[Pair]:
        return [pair for pair in self.pairs if pair.outcome is not None]

    def outcomes(self) -> list[float]:
        """The candidate's score per parsed pair: 1 a win, 0.5 a tie, 0 a loss."""
        return [OUTCOME[pair.outcome] for pair in self.parsed]

    def length_differences(self) -> list[int]:
        """Per parsed pair: the candidate's answer's length minus the other's, in characters."""
        return [len(pair.candidate) - len(pair.other) for pair in self.parsed]

    def count(self, outcome: str | None) -> int:
        return sum(pair.outcome == outcome for pair in self.pairs)


def render(pack: dict, row: dict, answer_a: str, answer_b: str) -> str:
    """The pack's judge prompt for one instruction (Alpaca row: instruction, input, output as the reference) and
    two answers, A shown first; placeholders filled in one pass, so an answer's own braces stay as written."""
    text = (pack.get("judge") or {}).get("prompt") or ""
    if not text.strip():
        raise JudgeError(f"language pack {pack.get('code')!r} has no [judge] prompt: add one (docs/judge.md)")
    values = {
        "instruction": row["instruction"],
        "input": row.get("input") or pack["judge"].get("no_input") or "",
        "reference": row.get("output") or "",
        "answer_a": answer_a,
        "answer_b": answer_b,
    }
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def _label_of(token: str) -> str | None:
    """The verdict label a generated token spells ("A", " A", "[[A", "A]]"), or None."""
    bare = token.strip().strip("[]").strip()
    return bare if bare in LABELS else None


def read_logprobs(top_logprobs: list[dict[str, float]] | None) -> Verdict | None:
    """The verdict at the first generated token whose likeliest alternative is a label: the likeliest label there,
    and P(A) / (P(A) + P(B)) summed over the spellings of each; None where no token is a label."""
    for step in top_logprobs or []:
        if not step or _label_of(max(step, key=step.get)) is None:
            continue
        mass = dict.fromkeys(LABELS, 0.0)
        for token, logprob in step.items():
            label = _label_of(token)
            if label is not None:
                mass[label] += math.exp(logprob)
        both = mass["A"] + mass["B"]
        return Verdict(max(LABELS, key=mass.get), "logprobs", mass["A"] / both if both > 0 else None)
    return None


def read_text(text: str) -> Verdict:
    """The last `[[A]]`, `[[B]]` or `[[C]]` of a reply (a judge that explains first ends with its verdict)."""
    found = TEXT_VERDICT.findall(text)
    return Verdict(found[-1] if found else None, "text")


def read_verdict(completion: Completion, mode: str) -> Verdict:
    """A reply read as the mode says: logprobs only, text only, or auto (log-probabilities where present)."""
    if mode != "text":
        verdict = read_logprobs(completion.top_logprobs)
        if verdict is not None:
            return verdict
        if mode == "logprobs":
            return Verdict(None, "logprobs")
    return read_text(completion.text)


def outcome_of(candidate_first: Verdict, candidate_second: Verdict) -> str | None:
    """The candidate's result over both orders: the same preference both ways, else a tie; None if unparsed."""
    if candidate_first.label is None or candidate_second.label is None:
        return None
    first = {"A": "win", "B": "loss", "C": "tie"}[candidate_first.label]
    second = {"A": "loss", "B": "win", "C": "tie"}[candidate_second.label]
    return first if first == second else "tie"


def judge_pairs(
    client: Client,
    pack: dict,
    rows: list[dict],
    candidate_answers: list[str],
    other_answers: list[str],
    settings: Judge,
) -> Judgement:
    """The candidate's answers against another model's on the first `settings.prompts` rows, each pair asked in
    both orders (identical answers are a tie without asking). Calls and tokens: what this comparison cost the
    client (nothing when every verdict was cached)."""
    if not len(rows) == len(candidate_answers) == len(other_answers):
        raise JudgeError(
            f"{len(rows)} prompts, {len(candidate_answers)} candidate answers and {len(other_answers)} other answers:"
            " the answers must be to the same prompts, in order"
        )
    chosen = list(zip(rows, candidate_answers, other_answers, strict=True))[: settings.prompts]
    asked = [(row, mine, theirs) for row, mine, theirs in chosen if mine.strip() != theirs.strip()]
    prompts = [render(pack, row, a, b) for row, mine, theirs in asked for a, b in ((mine, theirs), (theirs, mine))]
    before = client.usage
    replies = client.answer([_chat_request(prompt, client, settings) for prompt in prompts])  # one batch: concurrent
    verdicts = iter(read_verdict(reply, settings.mode) for reply in replies)
    same = Verdict("C", "identical")
    judgement = Judgement(model=settings.model)
    for row, mine, theirs in chosen:
        first, second = (next(verdicts), next(verdicts)) if mine.strip() != theirs.strip() else (same, same)
        judgement.pairs.append(Pair(row["instruction"], mine, theirs, first, second, outcome_of(first, second)))
    after = client.usage
    judgement.calls = after["requests"] - before["requests"]
    judgement.tokens = sum(after[k] - before[k] for k in ("prompt_tokens", "completion_tokens"))
    return judgement


def _chat_request(prompt: str, client: Client, settings: Judge) -> dict:
    """A greedy chat request for one verdict, with log-probabilities unless the mode reads text only."""
    logprobs = settings.logprobs if settings.mode != "text" else 0
    return request(
        "chat",
        [{"role": "user", "content": prompt}],
        client.settings,
        max_tokens=settings.max_tokens,
        temperature=0.0,
        logprobs=logprobs,
        seed=settings.seed,
    )
