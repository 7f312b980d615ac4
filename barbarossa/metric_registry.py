"""Every metric the leaderboard knows, declared once: its name in prose and in a table header, which way is better,
how its numbers read, and where it is shown.

The leaderboard rows, the release policy, the bootstrap, the console tables, `--compare` and the cards all read
these declarations, so a new metric is one `register` call (a test registers a toy one). The registry's order is
the tables' order. Numbers read by their metric's rule in reasons and cards (`format_value`); a console table
cell reads 3 decimals whatever the metric (`format_cell`), so its columns line up.

A foundation module: it imports nothing from the stages (config derives its direction tables from it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

# What a metric measures: the held-out loss, the greedy answers, the tokenizer, a public benchmark (scored per
# benchmark set, under a row's "benchmarks"), or a judge's verdicts (barbarossa/judge/). The bootstrap gives loss and
# generation metrics intervals (evaluate/stats.py).
GROUPS = ("loss", "generation", "tokenizer", "benchmark", "judge")
# Where a metric is shown; a metric lists the views it is in.
VIEWS = {
    "row": "a column of every leaderboard row, with base_ and delta_ against the untuned base (the wide console table)",
    "console": "beside the primary in the 80-column console table",
    "compare": "beside the primaries in `barbarossa leaderboard --compare`",
    "card": "a column of the leaderboard card's compact table",
    "detail": "a section of the card's per-metric tables, grouped by base",
    "chart": "a base-vs-tuned chart on the card",
    "extra_sets": "a column of the card's table of the user's extra eval sets",
}


@dataclass(frozen=True)
class Metric:
    """One metric's facts. `higher_is_better` None: it describes a model and is never ranked on (fertility)."""

    key: str
    label: str  # in reasons and card headings: "held-out loss"
    short: str  # a table header: "loss"
    group: str
    higher_is_better: bool | None
    places: int = 3  # decimals in reasons and cards
    share: bool = False  # a 0..1 share, shown as a percentage
    rankable: bool = False  # a release policy may rank on it ([policy] primary): a row metric, or a judge's win rate
    views: frozenset[str] = field(default_factory=frozenset)
    # named for the run's language: the label is this template ("{language} answers"), the header the language code
    language_label: str = ""

    def format(self, value, signed: bool = False) -> str:
        """A value (a difference when `signed`) as reasons and cards write it."""
        return _number(value, signed, self.places, self.share)


def _number(value, signed: bool, places: int, share: bool) -> str:
    """'–' when missing; a share as a whole percentage; else `places` decimals; '+' on a signed difference."""
    if value is None:
        return "–"
    sign = "+" if signed else ""
    if share:
        return f"{value * 100:{sign}.0f}%"
    return f"{value:{sign}.{places}f}"


_REGISTERED: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric (after those already registered: tables show it last); a bad declaration is refused."""
    if metric.key in _REGISTERED:
        raise ValueError(f"metric {metric.key!r} is already registered")
    if metric.group not in GROUPS:
        raise ValueError(f"metric {metric.key!r}: group must be one of {', '.join(GROUPS)}, got {metric.group!r}")
    unknown = metric.views - set(VIEWS)
    if unknown:
        raise ValueError(f"metric {metric.key!r}: unknown view(s) {', '.join(sorted(unknown))}")
    if metric.rankable and (metric.higher_is_better is None or ("row" not in metric.views and metric.group != "judge")):
        raise ValueError(f"metric {metric.key!r}: a policy ranks only on a row metric or a judge's, with a direction")
    _REGISTERED[metric.key] = metric
    return metric


def get(key: str) -> Metric:
    """The metric called `key`; a KeyError names the registered ones."""
    try:
        return _REGISTERED[key]
    except KeyError:
        raise KeyError(f"no metric {key!r}; registered: {', '.join(_REGISTERED)}") from None


def by_group(group: str) -> list[Metric]:
    """One group's metrics, in table order."""
    return [m for m in _REGISTERED.values() if m.group == group]


def shown_in(view: str) -> list[Metric]:
    """The metrics a view shows, in table order."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    return [m for m in _REGISTERED.values() if view in m.views]


def row_metrics() -> list[Metric]:
    """The metrics every leaderboard row carries, each with its base_ and delta_."""
    return shown_in("row")


class Directions(Mapping):
    """{key: higher is better} of the metrics `pick` selects, read from the registry at each use, so a metric
    registered later is in it (config.DIRECTION and config.BENCHMARK_DIRECTION are two of these)."""

    def __init__(self, pick: Callable[[Metric], bool]):
        self._pick = pick

    def _current(self) -> dict[str, bool]:
        return {m.key: m.higher_is_better for m in _REGISTERED.values() if self._pick(m)}

    def __getitem__(self, key: str) -> bool:
        return self._current()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"Directions({self._current()!r})"


def policy_directions() -> Directions:
    """{metric: higher is better} for the metrics a policy may rank on."""
    return Directions(lambda m: m.rankable)


def group_directions(group: str) -> Directions:
    """{metric: higher is better} for one group's metrics (the benchmark metrics a policy must not lose)."""
    return Directions(lambda m: m.group == group)


def higher_is_better(key: str) -> bool:
    """Which way the metric is better; KeyError for a metric without a direction (it is never compared that way)."""
    direction = get(key).higher_is_better
    if direction is None:
        raise KeyError(f"metric {key!r} has no direction: it is not ranked or judged")
    return direction


# --------------------------------------------------------------------------- names


def label(key: str, language: str | None = None) -> str:
    """How prose names a metric; one named for the run's language reads with `language` where given."""
    metric = _REGISTERED.get(key)
    if metric is None:
        return key
    if language and metric.language_label:
        return metric.language_label.format(language=language)
    return metric.label


def short_label(key: str, code: str | None = None) -> str:
    """A metric's table header; one named for the run's language is headed with its `code` where given."""
    metric = _REGISTERED.get(key)
    if metric is None:
        return key
    return code if code and metric.language_label else metric.short


# --------------------------------------------------------------------------- numbers


def format_value(key: str, value, signed: bool = False) -> str:
    """A metric's value (a difference when `signed`) by the metric's rule: shares as percentages, else its
    decimals (3 for a key the registry does not know)."""
    metric = _REGISTERED.get(key)
    return metric.format(value, signed) if metric else _number(value, signed, 3, False)


def format_interval(key: str, interval, signed: bool = False) -> str:
    """' [lo, hi]' by the metric's rule, or nothing where there is no interval."""
    if not interval:
        return ""
    return f" [{format_value(key, interval[0], signed)}, {format_value(key, interval[1], signed)}]"


def format_p(p: float) -> str:
    """A p-value (a bootstrap of 1000 resamples cannot resolve below ~0.002)."""
    return f"p = {p:.2g}" if p >= 0.001 else "p < 0.001"


def format_cell(value, signed: bool = False) -> str:
    """A row value in a console table cell: every float to 3 decimals whatever the metric (the columns line up),
    signed when asked or negative; '–' for missing, anything else as text."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.3f}" if signed or value < 0 else f"{value:.3f}"
    return str(value)


def row_cell(row: dict, key: str) -> str:
    """One leaderboard cell as text; deltas always carry their sign."""
    return format_cell(row.get(key), signed=key.startswith("delta_"))


# --------------------------------------------------------------------------- the metrics

for _metric in (
    Metric(
        key="bits_per_byte",
        label="bits per byte",
        short="bits/byte",
        group="loss",
        higher_is_better=False,
        rankable=True,
        views=frozenset({"row", "detail", "chart"}),
    ),
    Metric(
        key="eval_loss",
        label="held-out loss",
        short="loss",
        group="loss",
        higher_is_better=False,
        rankable=True,
        views=frozenset({"row", "detail", "compare", "extra_sets"}),
    ),
    Metric(
        key="perplexity",
        label="perplexity",
        short="ppl",
        group="loss",
        higher_is_better=False,
        places=2,
        rankable=True,
        views=frozenset({"row"}),
    ),
    Metric(
        key="chrf",
        label="chrF++",
        short="chrF++",
        group="generation",
        higher_is_better=True,
        places=1,
        rankable=True,
        views=frozenset({"row", "detail", "console", "compare", "card", "chart", "extra_sets"}),
    ),
    Metric(
        key="bleu",
        label="BLEU",
        short="BLEU",
        group="generation",
        higher_is_better=True,
        places=1,
        rankable=True,
        views=frozenset({"row", "detail", "extra_sets"}),
    ),
    Metric(
        key="fidelity",
        label="answers in the language",
        short="lang",
        group="generation",
        higher_is_better=True,
        share=True,
        rankable=True,
        views=frozenset({"row", "detail", "console", "compare", "card", "chart", "extra_sets"}),
        language_label="{language} answers",
    ),
    Metric(  # answers too short to tell their language: left out of fidelity, counted here (evaluate/langid.py)
        key="undetermined_rate",
        label="answers too short to tell their language",
        short="und",
        group="generation",
        higher_is_better=False,
        share=True,
        views=frozenset({"row", "detail", "compare", "card", "extra_sets"}),
    ),
    Metric(
        key="degenerate_rate",
        label="degenerate answers",
        short="loops",
        group="generation",
        higher_is_better=False,
        share=True,
        rankable=True,
        views=frozenset({"row", "detail", "compare", "card", "chart"}),
    ),
    Metric(
        key="fertility",
        label="tokens per word",
        short="tok/word",
        group="tokenizer",
        higher_is_better=None,
        views=frozenset({"row"}),
    ),
    Metric(key="accuracy", label="accuracy", short="acc", group="benchmark", higher_is_better=True, share=True),
    Metric(
        key="accuracy_norm",
        label="accuracy per byte of the choice",
        short="acc/byte",
        group="benchmark",
        higher_is_better=True,
        share=True,
    ),
    Metric(
        key="chrf_into",
        label="chrF++ into the language",
        short="chrF into",
        group="benchmark",
        higher_is_better=True,
        places=1,
    ),
    Metric(
        key="chrf_out",
        label="chrF++ out of the language",
        short="chrF out",
        group="benchmark",
        higher_is_better=True,
        places=1,
    ),
):
    register(_metric)

# The judge's win rates (barbarossa/judge/, docs/judge.md): shares of pairs won (ties half) against the base and
# against the last release. Not row metrics (a base has no win rate against itself but the 0.5 of a tie, which
# decide/leaderboard.py gives it); a policy may rank on the rates against the base, and must_not_lose any of them.
# The console and the card show them all in a judge table of their own (reporting.judge_table, cards.judge_components);
# `--compare` the rates against the base (None, '–', for a run without a judge).
for _against, _whom in (("base", "the base"), ("release", "the last release")):
    for _name, _what, _short in (
        ("win_rate", "win rate", "win"),
        ("lc_win_rate", "length-controlled win rate", "LC win"),
    ):
        register(
            Metric(
                key=f"judge.{_name}_vs_{_against}",
                label=f"judge's {_what} against {_whom}",
                short=f"{_short}/{_against}",
                group="judge",
                higher_is_better=True,
                share=True,
                rankable=_against == "base",
                views=frozenset({"compare"}) if _against == "base" else frozenset(),
            )
        )
