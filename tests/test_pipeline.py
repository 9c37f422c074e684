"""`dvc repro` from a copy of the project, as a user runs it: the whole pipeline, end to end,
and `dvc status` marks exactly the stages that read a changed key.

The project is the code, dvc.yaml and the demo's committed configuration (`DEMO_PARAMS`,
never the working params.yaml, which users replace). Which stages exist is dvc.yaml's
business: the expected sets below are read from the dvc.lock the run wrote (each stage's
params and outputs), so they follow the pipeline's layout rather than a list kept here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from repo_data import DEMO_PARAMS  # tests/extract/fixtures, on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]
CODE = ["amid", "extract", "distill", "evaluate", "configs", "dvc.yaml", ".dvcignore"]
METHODS = ["baseline", "teacher", "amid"]


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}  # no network here, nothing to report to
    out = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env=env)
    assert out.returncode == 0, f"dvc {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


def _changed(proj: Path, params: dict, edit: dict[str, object]) -> set[str]:
    """The stages `dvc status` marks after setting dotted keys (then restored)."""
    changed = yaml.safe_load(yaml.safe_dump(params))
    for key, value in edit.items():
        *parents, leaf = key.split(".")
        node = changed
        for part in parents:
            node = node[part]
        node[leaf] = value
    (proj / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        return set(json.loads(_dvc("status", "--json", cwd=proj).stdout))
    finally:
        (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _readers(lock: dict, key: str) -> set[str]:
    """Stages whose dvc.lock entry records a params section holding the dotted `key`."""
    out = set()
    for name, stage in lock["stages"].items():
        read = stage.get("params", {}).get("params.yaml", {})
        if any(key == section or key.startswith(f"{section}.") for section in read):
            out.add(name)
    return out


def _writers(lock: dict, prefix: str) -> set[str]:
    """Stages with an output under `prefix` (a folder such as runs/, or a file)."""
    return {name for name, stage in lock["stages"].items()
            if any(o["path"].startswith(prefix) for o in stage.get("outs", []))}


@pytest.mark.slow
def test_dvc_repro_runs_the_demo_and_reruns_only_what_changed(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in CODE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, proj / name)
    params = yaml.safe_load(DEMO_PARAMS.read_text())
    params["demo"]["n_per_class"] = 12
    params["train"]["epochs"] = 4
    for options in params["methods"].values():  # a frozen teacher must leave student epochs
        if options.get("fixed_teacher"):
            options["teacher_epochs"] = 2
    params["pipeline"]["methods"] = METHODS
    params["pipeline"]["repeat_seeds"] = [1]
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc("init", "--no-scm", "-q", cwd=proj)

    _dvc("repro", cwd=proj)
    for method in METHODS:
        metrics = json.loads((proj / f"metrics/{method}.json").read_text())
        assert metrics["method"] == method and metrics["dataset"] == "demo"
        # the teacher method's student path is untrained: no student block (issue 12)
        assert ("student" in metrics) == (method != "teacher")
        assert ("teacher" in metrics) == (method != "baseline")
        if method != "teacher":  # the teacher run's student was never trained alone
            student = metrics["student"]
            assert 0.0 <= student["top1"] <= 1.0 and "R@1" in student["retrieval"]
        again = json.loads((proj / f"metrics/{method}_seed1.json").read_text())
        assert (again["method"], again["seed"], metrics["seed"]) == (method, 1, 0)
    report = (proj / "reports/results.md").read_text()  # each method's two seeds: one row
    assert all(f"| {m} (n=2) |" in report for m in METHODS)
    # the ablation grid (params.yaml sweeps.alpha): one stack, grouped over its seeds
    sweep = json.loads((proj / "metrics/sweeps/alpha.json").read_text())
    alphas = params["sweeps"]["alpha"]["grid"]["methods"]["amid"]["alpha"]
    assert list(sweep["groups"]) == [f"alpha={float(a)}" for a in alphas] and len(alphas) == 2
    assert all(g["n"] == 3 and g["seeds"] == [0, 1, 2] for g in sweep["groups"].values())
    modes = {m["mode"] for m in json.loads((proj / "runs/sweeps/alpha/sweep.json").read_text())
             ["members"]}
    assert modes == {"stacked"}

    # dvc.yaml's plots draw one line per run that pairs a teacher with a trained student,
    # whatever the methods: not baseline (no teacher), not teacher (its student is untrained)
    shown = json.loads(_dvc("plots", "show", "--json", cwd=proj).stdout)["data"]
    gap = next(v for k, v in shown.items() if k.startswith("teacher-student accuracy gap"))
    rows = gap[0]["content"]["data"]["values"]
    paired = {run for m in METHODS if m not in ("baseline", "teacher") for run in (m, f"{m}_seed1")}
    assert {r["run"] for r in rows} == paired
    assert len(rows) == len(paired) * params["train"]["epochs"]

    again = _dvc("repro", cwd=proj)
    assert "Running stage" not in again.stdout  # nothing changed, nothing runs

    # each stage depends on exactly the sections it reads: what trains a method reads its
    # options, every training stage reads train, every evaluation reads evaluate
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    trained, scored = _writers(lock, "runs/"), _writers(lock, "metrics/")
    amid = _readers(lock, "methods.amid.alpha")  # amid's runs and the alpha grid (of amid)
    assert amid and amid == _writers(lock, "runs/amid") | _writers(lock, "runs/sweeps/alpha")
    assert _changed(proj, params, {"methods.amid.alpha": 2.0}) == amid
    assert _readers(lock, "methods.kd.weight") == set()  # kd is not trained here
    assert _changed(proj, params, {"methods.kd.weight": 0.9}) == set()
    assert _readers(lock, "train.lr") == trained
    assert _changed(proj, params, {"train.lr": 0.002}) == trained
    assert scored and _readers(lock, "evaluate.projection") == scored
    assert _changed(proj, params, {"evaluate.projection": "tsne"}) == scored
    visual = _writers(lock, f"cache/demo/visual__{params['extract']['visual']['extractor']}")
    assert len(visual) == 1 and _readers(lock, "extract.visual.batch_size") == visual
    assert _changed(proj, params, {"extract.visual.batch_size": 4}) == visual

    # a re-extraction that gives the same features leaves the cache's bytes (and every
    # stage after it) untouched
    before = (proj / "dvc.lock").read_text()
    params["extract"]["visual"]["batch_size"] = 4
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = set(re.findall(r"Running stage '([^']+)'", _dvc("repro", cwd=proj).stdout))
    assert ran == visual
    (stage,) = visual
    lock, old = yaml.safe_load((proj / "dvc.lock").read_text()), yaml.safe_load(before)
    out = lambda d: d["stages"][stage]["outs"][0]["md5"]  # noqa: E731
    assert out(lock) == out(old)
