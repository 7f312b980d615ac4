"""A roster's worth of rows: 30 tiny candidates (6 families × 5 recipes) + their 6 bases through the whole flow.

Checks that the leaderboard stays reviewable at that size: every candidate gets a row, the card's tables
fit the card's width in a real browser (no column clipped), its charts draw, and the CLI table fits an
80-column terminal. Prints the orchestration overhead per work item (task wall time not spent training
or evaluating), the figure the README quotes.
"""

import json
import re
from html import unescape

import pytest
from conftest import render_in_chromium
from test_flow import run_flow

from barbarossa import reporting
from barbarossa.decide import cards
from barbarossa.models import roster

pytestmark = pytest.mark.flow

# Runs in the page after Metaflow's card renders: every table's width against the space it has.
MEASURE = """
<script>
function measure() {
  const tables = [...document.querySelectorAll('table')];
  if (tables.length < 3) { return setTimeout(measure, 200); }
  const out = tables.map(t => ({
    width: Math.ceil(t.getBoundingClientRect().width),
    room: Math.floor(t.parentElement.getBoundingClientRect().width),
    headers: [...t.querySelectorAll('th')].map(h => h.textContent.trim()),
  }));
  document.body.setAttribute('data-widths', JSON.stringify(out));
}
window.addEventListener('load', () => setTimeout(measure, 1000));
</script>
"""


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    status, run = run_flow(
        {"METAFLOW_RUN_MAX_WORKERS": "2"},
        infra={"compute": "local", "models": "tiny-scale", "large_from_gpu_memory_gb": 40},
        models="tiny-scale",
        profile="smoke",
        max_steps=2,
        output_root=str(out / "runs"),
    )
    assert status == "successful", run["end"].task.stderr if run else status
    return run


def test_thirty_candidates_get_a_row_each(scale_run):
    rows = scale_run.data.leaderboard
    candidates = [r for r in rows if r["kind"] == "candidate"]
    assert len(candidates) == len(roster.select("tiny-scale")) >= 30
    assert len({r["family"] for r in candidates}) == 6 and all(r["status"] == "ok" for r in rows)
    assert sorted(r["rank"] for r in candidates) == list(range(1, len(candidates) + 1))


@pytest.mark.browser
def test_the_leaderboard_card_shows_every_column_at_roster_scale(scale_run, tmp_path):
    from metaflow.cards import get_cards

    html = get_cards(scale_run["join"].task, id="leaderboard")[0].get()
    head, body_end, tail = html.rpartition("</body>")  # the last one: the card's script holds that text too
    dom = render_in_chromium(head + MEASURE + body_end + tail, tmp_path, window="1280,900")
    widths = json.loads(unescape(re.search(r'data-widths="([^"]+)"', dom).group(1)))
    compact = next(t for t in widths if t["headers"][:2] == ["#", "model"])
    primary = scale_run.data.settings.policy.primary
    assert compact["headers"] == cards.compact_headers(primary)
    for table in widths:  # no table wider than the column the card gives it: no column clipped or scrolled away
        assert table["width"] <= table["room"] + 1, table
    assert dom.count('class="marks"') == 1 + len(cards.chart_titles())  # every chart drew, the faceted loss chart too
    names = [r["name"] for r in scale_run.data.leaderboard]
    assert all(name in dom for name in names)


def test_the_cli_table_fits_80_columns(scale_run):
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(reporting.leaderboard_table(scale_run.data.leaderboard))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert all(r["name"] in "\n".join(lines) for r in scale_run.data.leaderboard)  # no name cut to "…"


def test_orchestration_overhead_per_work_item(scale_run):
    """Task wall time minus training and evaluation: what Metaflow and model loading cost per item (printed)."""
    tasks = [t for step in ("tune_small", "tune_large") for t in scale_run[step] if t.data.item["kind"] != "idle"]
    overheads = []
    for task in tasks:
        busy = (task.data.train or {}).get("train_seconds", 0) + (task.data.metrics or {}).get("eval_seconds", 0)
        overheads.append((task.finished_at - task.created_at).total_seconds() - busy)
    wall = (scale_run.finished_at - scale_run.created_at).total_seconds()
    mean = sum(overheads) / len(overheads)
    print(
        f"\n{len(tasks)} work items, run wall {wall:.0f} s ({wall / len(tasks):.1f} s per item on 2 workers), "
        f"orchestration overhead per item {mean:.1f} s (min {min(overheads):.1f}, max {max(overheads):.1f})"
    )
    assert len(tasks) == 36 and all(o > 0 for o in overheads)
