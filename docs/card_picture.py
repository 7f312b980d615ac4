"""Screenshot a run's leaderboard card for the README (`make card-picture` after a `make run`).

Metaflow cards draw their tables and charts client-side, so the picture comes from headless
Chromium rendering the card's HTML, as a browser showing the Metaflow UI would.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from barbarossa import cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run id; default: the latest successful run")
    parser.add_argument("--out", default=str(Path(__file__).with_name("leaderboard_card.png")))
    parser.add_argument("--size", default="1280,1400", help="browser window WIDTH,HEIGHT in pixels")
    args = parser.parse_args()
    from metaflow.cards import get_cards

    run = cli.find_run(args.run)
    html = get_cards(run["join"].task, id="leaderboard")[0].get()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        sys.exit("chromium is not installed: `make browser` installs it")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "card.html"
        page.write_text(html, encoding="utf-8")
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                f"--user-data-dir={tmp}/profile",
                "--hide-scrollbars",
                "--virtual-time-budget=15000",
                f"--window-size={args.size}",
                f"--screenshot={Path(args.out).resolve()}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"{run.pathspec}: leaderboard card → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
