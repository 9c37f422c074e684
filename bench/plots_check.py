"""Does the `dvc plots show` page draw, offline, in a real browser?

Builds the page with `dvc plots show` (the project's template, .dvc/config:
plots.html_template), opens it from file:// in headless Chromium with every
background network feature off and no host name resolving, and checks

- the DOM after the scripts ran: one vega view (`class="marks"`, a canvas or
  svg) per plot DVC wrote, and no vega-embed error message;
- a screenshot: the share of non-white pixels, and of coloured ones (the
  lines, points and cells: axis text alone is grey).

Prints the figures and the screenshot's path; exits 1 when a check fails, 2
when Chromium or the page is missing. tests/test_plots.py checks the page's
text (no remote script, the data of every plot); this checks that it draws.

    apt-get install -y chromium            # Debian's package
    python bench/plots_check.py            # the plots of the project in the current folder
    python bench/plots_check.py --page dvc_plots/index.html --height 6000
    python bench/plots_check.py metrics/amid/embedding_2d.csv metrics/amid/history.csv
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# everything that could reach the network in the background, off, and no host name
# resolves: the page must draw from the file alone, as on a machine with no network
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
         "--virtual-time-budget=10000"]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("plots_check: no chromium on PATH (apt-get install -y chromium)")


def build_page(targets: list[str], out: Path) -> Path:
    """`dvc plots show` into `out`; the path of its index.html."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(["dvc", "plots", "show", "-o", str(out), *targets],
                          capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        sys.exit(f"plots_check: dvc plots show failed: {done.stderr.strip() or done.stdout}")
    if done.stderr.strip():
        print(f"dvc plots show said: {done.stderr.strip()}")
    return out / "index.html"


def chromium(browser: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *extra,
                           page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=300)


def ink(png: Path) -> tuple[float, float]:
    """(non-white share, coloured share) of the screenshot's pixels."""
    import numpy as np
    from PIL import Image  # matplotlib's dependency

    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    non_white = (rgb.min(axis=2) < 245).mean()
    coloured = (rgb.max(axis=2) - rgb.min(axis=2) > 40).mean()  # saturated: not grey text
    return float(non_white), float(coloured)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help="plot targets for dvc plots show (all)")
    parser.add_argument("--page", type=Path, help="an index.html already written (skips dvc)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "plots_check",
                        help="folder for the page and the screenshot (default %(default)s)")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--min-ink", type=float, default=0.01,
                        help="least share of non-white pixels (default %(default)s)")
    parser.add_argument("--min-colour", type=float, default=0.001,
                        help="least share of coloured pixels (default %(default)s)")
    args = parser.parse_args(argv)
    browser = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    page = args.page or build_page(args.targets, args.out / "page")
    if not page.is_file():
        print(f"plots_check: {page} does not exist", file=sys.stderr)
        return 2
    html = page.read_text(encoding="utf-8")
    plots = len(re.findall(r"vegaEmbed\('#", html))
    remote = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?https?:[^>]*>", html)

    with tempfile.TemporaryDirectory() as profile:  # a new, empty profile each time
        dom = chromium(browser, page, Path(profile), "--dump-dom").stdout
    views = len(re.findall(r'class="marks"', dom))
    errors = re.findall(r'<div class="error"[^>]*>(.*?)</div>', dom)  # vega-embed's message
    shot = args.out / "screenshot.png"
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        chromium(browser, page, Path(profile), f"--screenshot={shot}",
                 f"--window-size={args.width},{args.height}")
    if not shot.is_file():
        print("plots_check: chromium wrote no screenshot", file=sys.stderr)
        return 2
    non_white, coloured = ink(shot)

    print(f"page {page}: {plots} plots, {len(remote)} remote scripts")
    print(f"chromium: {views} vega views drawn, {len(errors)} errors")
    print(f"screenshot {shot} ({args.width}x{args.height}): {non_white:.1%} non-white, "
          f"{coloured:.2%} coloured")
    failed = []
    if remote:
        failed.append(f"the page loads remote scripts: {remote[:3]}")
    if plots == 0 or views < plots:
        failed.append(f"{views} of {plots} plots drew")
    if errors:
        failed.append(f"vega-embed errors: {errors[:3]}")
    if non_white < args.min_ink or coloured < args.min_colour:
        failed.append("the screenshot is (almost) blank")
    for line in failed:
        print(f"FAILED: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
