"""The judge: a strong model compares a candidate's greedy answers with its base's and its last release's, each pair
in both orders, and the leaderboard reads win rates controlled for position and length (docs/judge.md).

`Judge` is the `[judge]` table; `judge_pairs(client, pack, rows, candidate_answers, other_answers, settings)` asks
for the verdicts through the endpoint layer (`llm.connect(judge.teacher(settings), cache_dir)`); `row_fields` turns the
judgements into the row's `judge.*` fields.
"""

from __future__ import annotations

from barbarossa.judge.numbers import bootstrap, length_controlled, row_fields, win_rate
from barbarossa.judge.pairs import JudgeError, Judgement, Pair, Verdict, judge_pairs, render
from barbarossa.judge.settings import Judge, teacher

__all__ = [
    "Judge",
    "JudgeError",
    "Judgement",
    "Pair",
    "Verdict",
    "bootstrap",
    "judge_pairs",
    "length_controlled",
    "render",
    "teacher",
    "row_fields",
    "win_rate",
]
