"""`dvc plots show` draws offline: the project's page template carries vega inline, and
the plots dvc.yaml declares (embedding scatters by class, each run's dvclive history,
the report's curves) reach the page with their data.

bench/plots_check.py renders the same page in headless Chromium (a script: it needs
a browser)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from amid.distill.runlog import open_live
from amid.evaluate.history import run_history

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ROOT / "configs" / "plots"
LIBRARIES = {"vega": "vega", "vega-lite": "vegaLite", "vega-embed": "vegaEmbed"}  # -> global
BLOCK = re.compile(r"<script>/\*! (?P<name>[\w-]+) (?P<version>[\d.]+) \| (?P<notice>[^|]+) \| "
                   r"BSD-3-Clause, configs/plots/vendor/LICENSE\.(?P=name) \| npm \S+ \| "
                   r"sha256 (?P<sha>[0-9a-f]{64}) \*/\n(?P<code>.*?)\n</script>", re.DOTALL)
# what DVC writes per plot (dvc_render.vega.VegaRenderer.DIV)
SPEC = re.compile(r"var spec = (\{.*?\});\s*vegaEmbed\(", re.DOTALL)
HISTORY = [{"epoch": e, "loss_total": 2.0 / (e + 1), "loss_ts": 0.5 - 0.1 * e,
            "val_acc_student": 0.2 * e, "val_acc_teacher": 0.5 + 0.1 * e} for e in range(4)]


def _no_remote_scripts(html: str) -> None:
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html, flags=re.IGNORECASE)
    assert tags, "no script tag at all"
    loading = [t for t in tags if re.search(r"\b(?:src|href)\s*=", t, flags=re.IGNORECASE)]
    assert loading == [], f"the page loads files: {loading}"


def test_the_page_template_inlines_the_vendored_libraries_and_no_cdn() -> None:
    page = (PLOTS / "page.html").read_text(encoding="utf-8")
    # DVC fills these by text replacement; {scripts} would add its CDN links
    assert "{plot_divs}" in page and "{refresh_tag}" in page and "{scripts}" not in page
    _no_remote_scripts(page)
    blocks = list(BLOCK.finditer(page))
    assert [b["name"] for b in blocks] == list(LIBRARIES)  # vega-embed needs the other two
    for block in blocks:
        code, name = block["code"], block["name"]
        # unedited since configs/plots/vendor/update.py inlined it
        assert hashlib.sha256(code.encode("utf-8")).hexdigest() == block["sha"]
        assert f'"{block["version"]}"' in code  # the build's own version string
        assert re.search(rf"\.{LIBRARIES[name]}=", code), f"{name} defines no {LIBRARIES[name]}"
        licence = (PLOTS / "vendor" / f"LICENSE.{name}").read_text(encoding="utf-8")
        assert licence.splitlines()[0].strip() == block["notice"].strip()
        assert "Redistributions in binary form must reproduce" in licence
    config = (ROOT / ".dvc" / "config").read_text(encoding="utf-8")
    # DVC resolves a relative template path against .dvc/
    path = re.search(r"html_template\s*=\s*(\S+)", config)
    assert path and (ROOT / ".dvc" / path[1]).resolve() == (PLOTS / "page.html").resolve()


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def _project(tmp_path: Path) -> Path:
    """The repository's plot definitions and page over one method's data: the evaluate
    stage's `plots:` (for `amid`) and the top-level `plots:` of dvc.yaml, verbatim."""
    proj = tmp_path / "proj"
    proj.mkdir()
    _dvc("init", "--no-scm", "-q", cwd=proj)
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    shutil.copytree(PLOTS, proj / "configs" / "plots")
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    stage = {"foreach": ["amid"], "do": {
        "cmd": "true", "plots": pipeline["stages"]["evaluate"]["do"]["plots"]}}
    (proj / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"evaluate": stage}, "plots": pipeline["plots"]}, sort_keys=False))
    # the committed plot data the evaluate and report stages wrote, and a history
    # logged by dvclive and tabled by the evaluate stage's own function
    shutil.copytree(ROOT / "metrics" / "amid", proj / "metrics" / "amid")
    (proj / "reports").mkdir()
    shutil.copy(ROOT / "reports" / "curves.csv", proj / "reports" / "curves.csv")
    open_live(tmp_path / "run", HISTORY)
    run_history(tmp_path / "run").to_csv(proj / "metrics" / "amid" / "history.csv", index=False)
    return proj


def _specs(html: str) -> list[dict]:
    return [json.loads(s) for s in SPEC.findall(html)]


@pytest.mark.slow
def test_dvc_plots_show_writes_an_offline_page_with_every_declared_plot(tmp_path) -> None:
    proj = _project(tmp_path)
    out = _dvc("plots", "show", "-o", "page", cwd=proj)
    assert "failed" not in (out.stdout + out.stderr).lower()
    html = (proj / "page" / "index.html").read_text(encoding="utf-8")
    _no_remote_scripts(html)
    assert "cdn.jsdelivr" not in html
    for name in LIBRARIES:  # inlined from the template
        assert f"<script>/*! {name} " in html
    specs = _specs(html)
    # confusion, per-class, embedding, history, and the two top-level curves
    assert len(specs) == 6

    (scatter,) = [s for s in specs if s.get("encoding", {}).get("color", {}).get("field")
                  == "label"]
    points = pd.DataFrame(scatter["data"]["values"])
    csv = pd.read_csv(proj / "metrics" / "amid" / "embedding_2d.csv")
    assert scatter["mark"]["type"] == "point"
    assert points["label"].value_counts().sort_index().equals(
        csv["label"].value_counts().sort_index())
    assert sorted(points["x"].astype(float)) == pytest.approx(sorted(csv["x"]))

    (history,) = [s for s in specs if s.get("facet", {}).get("field") == "metric"]
    drawn = {(r["metric"], int(r["epoch"]), round(float(r["value"]), 9))
             for r in history["data"]["values"]}
    logged = {(name, row["epoch"] + 1, round(value, 9)) for row in HISTORY
              for name, value in row.items() if name != "epoch"}
    assert drawn == logged
    assert history["spec"]["encoding"]["x"]["field"] == "epoch"
    assert history["spec"]["encoding"]["y"]["field"] == "value"

    curves = pd.read_csv(proj / "reports" / "curves.csv")
    for column in ("acc_gap", "cos_same_class"):
        (spec,) = [s for s in specs if s.get("encoding", {}).get("y", {}).get("field") == column]
        assert len(spec["data"]["values"]) == curves[column].notna().sum()
