"""`run_sweep(..., reuse=[...])` / `amid-train --grid NAME --reuse DIR`: a grid point whose
run configuration equals a finished run's is that run's folder copied, not trained again;
a run that differs in anything (an option, the caches) or did not finish is not taken."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from amid.config import load_config
from amid.distill.cli import app
from amid.distill.sweep import parse_axes, run_repeats, run_sweep
from amid.distill.train import train
from amid.schema import to_dict

from .conftest import kill_at_checkpoint, make_dataset

# ts at its configured alpha (4.0) is what the source runs trained; alpha 1.0 is new
GRID = parse_axes(["train.seed=[0, 1]", "methods.ts.alpha=[1.0, 4.0]"])


def _project(root: Path, data_seed: int = 0) -> Path:
    """A tiny dataset and its params.yaml: ts (alpha 4), 2 epochs, seed 0, repeat seed 1."""
    syn = make_dataset(root, n_classes=3, per_class=10, seed=data_seed)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs = 2
    raw = to_dict(cfg)
    raw.setdefault("pipeline", {})["repeat_seeds"] = [1]
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _members(out: Path) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads((out / "sweep.json").read_text())["members"]}


def _dead_pid() -> int:
    """The pid of a process that has finished (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _epoch(run: Path) -> int:
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["epoch"])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return _project(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def source(project, tmp_path_factory) -> Path:
    """The method's own runs (train@ts): seeds 0 and 1 as one stack."""
    out = tmp_path_factory.mktemp("runs") / "ts"
    run_repeats("ts", project, [], out, live=False)
    return out


def test_identical_points_are_the_finished_runs_and_a_rerun_changes_nothing(project, source,
                                                                            tmp_path):
    out = tmp_path / "grid"
    # a point killed before its first checkpoint left a folder: the copy replaces it whole
    (out / "seed=1,alpha=4.0").mkdir(parents=True)
    (out / "seed=1,alpha=4.0" / "config.json").write_text("{}")
    # copies left by killed take-overs: a dead writer's go, a live one's stay
    dead = _dead_pid()
    stale = out / f".seed=0,alpha=4.0.{dead}.tmp"
    live = out / f".seed=0,alpha=4.0.{os.getppid()}.tmp"  # another process, running
    for folder in (stale, live):
        (folder / "sub").mkdir(parents=True)
    before = {run: _files(source / run) for run in ("ts", "ts_seed1")}
    done = run_sweep("ts", project, [], GRID, out, live=False, reuse=[source])

    assert not stale.exists() and live.is_dir()
    taken = {"seed=0,alpha=4.0": source / "ts", "seed=1,alpha=4.0": source / "ts_seed1"}
    for name, run in taken.items():  # every file of the run, byte for byte, and nothing else
        assert _files(out / name) == before[run.name], name
        assert (done[name].mode, done[name].source) == ("reused", run)
        assert len(done[name].history) == 2
    assert {run: _files(source / run) for run in before} == before  # the source untouched
    members = _members(out)
    for name in ("seed=0,alpha=1.0", "seed=1,alpha=1.0"):  # the new points: one stack of two
        assert (members[name]["mode"], members[name]["reused_from"]) == ("stacked", None)
        assert _epoch(out / name) == 2
        saved = json.loads((out / name / "config.json").read_text())["config"]
        assert (saved["train"]["seed"], saved["methods"]["ts"]["alpha"]) == (
            int(name[5]), 1.0)
    for name, run in taken.items():
        assert members[name]["mode"] == "reused"
        assert members[name]["reused_from"] == str(run) and members[name]["epochs"] == 2
    assert [m["error"] for m in members.values()] == [None] * 4
    # the grid's order, whichever way each point was made
    assert list(done) == ["seed=0,alpha=1.0", "seed=0,alpha=4.0", "seed=1,alpha=1.0",
                          "seed=1,alpha=4.0"]

    # rerun: every point finished, nothing trains or is copied again; sweep.json says the same
    grid = {name: _files(out / name) for name in members}
    stamps = {p: p.stat().st_mtime_ns for name in taken for p in (out / name).rglob("*")}
    again = run_sweep("ts", project, [], GRID, out, live=False, reuse=[source])
    assert {name: _files(out / name) for name in members} == grid
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the copies not even touched
    assert _members(out) == members
    assert {n: r.mode for n, r in again.items()} == {n: m["mode"] for n, m in members.items()}


def test_a_run_that_differs_in_an_option_is_trained_not_taken(project, tmp_path):
    other = tmp_path / "runs"
    cfg = load_config(project, ["train.lr=0.003"])  # everything else is the point's
    train("ts", cfg, other / "ts", live=False)
    out = tmp_path / "grid"
    done = run_sweep("ts", project, [], parse_axes(["methods.ts.alpha=[4.0]"]), out,
                     live=False, reuse=[other])
    assert (done["alpha=4.0"].mode, done["alpha=4.0"].source) == ("alone", None)
    assert json.loads((out / "alpha=4.0" / "config.json").read_text())["config"]["train"][
        "lr"] == 0.001
    assert _files(out / "alpha=4.0")["checkpoint.pt"] != _files(other / "ts")["checkpoint.pt"]


def test_a_run_on_other_caches_is_trained_not_taken(tmp_path):
    params = _project(tmp_path / "data")
    other = tmp_path / "runs"
    train("ts", load_config(params, []), other / "ts", live=False)
    _project(tmp_path / "data", data_seed=1)  # the same paths and settings, other features
    out = tmp_path / "grid"
    done = run_sweep("ts", params, [], parse_axes(["methods.ts.alpha=[4.0]"]), out,
                     live=False, reuse=[other])
    assert (done["alpha=4.0"].mode, done["alpha=4.0"].source) == ("alone", None)
    recorded = [json.loads((run / "config.json").read_text()) for run in
                (other / "ts", out / "alpha=4.0")]
    assert recorded[0]["config"] == recorded[1]["config"]  # only the caches differ
    assert recorded[0]["inputs"] != recorded[1]["inputs"]


@pytest.mark.parametrize("earlier_epochs", [0, 1], ids=["killed", "extended-then-killed"])
def test_an_unfinished_run_is_trained_not_taken(project, tmp_path, monkeypatch,
                                                earlier_epochs):
    """A run of 3 epochs killed before its last checkpoint (its checkpoint: epoch 2, its
    recorded configuration the point's). `extended`: a finished 1-epoch run resumed for 3,
    so it also holds outputs.h5 (of epoch 1): only its checkpoint's epoch tells."""
    three = ["train.epochs=3"]
    run = tmp_path / "runs" / "ts"
    if earlier_epochs:
        train("ts", load_config(project, ["train.epochs=1"]), run, live=False)
    with monkeypatch.context() as patch:
        kill_at_checkpoint(patch, 3)  # a kill before the last epoch's checkpoint
        with pytest.raises(KeyboardInterrupt):
            train("ts", load_config(project, three), run, live=False)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["config"]["train"]["epochs"]) == (2, 3)
    assert json.loads((run / "config.json").read_text())["config"]["train"]["epochs"] == 3
    assert (run / "outputs.h5").exists() == bool(earlier_epochs)
    left = _files(run)
    out = tmp_path / "grid"
    done = run_sweep("ts", project, three, parse_axes(["methods.ts.alpha=[4.0]"]), out,
                     live=False, reuse=[run.parent])
    assert (done["alpha=4.0"].mode, len(done["alpha=4.0"].history)) == ("alone", 3)
    assert _epoch(out / "alpha=4.0") == 3
    assert _files(run) == left  # the unfinished run is left as it was


def test_cli_reuse_names_a_missing_folder_and_needs_a_grid(project, source, tmp_path):
    runner = CliRunner()
    missing = tmp_path / "nope"
    bad = runner.invoke(app, ["--method", "ts", "--params", str(project), "--out",
                              str(tmp_path / "o"), "--sweep", "train.seed=[0]", "--reuse",
                              str(source), "--reuse", str(missing)])
    assert bad.exit_code == 2
    assert bad.stderr.strip().splitlines() == [
        f"amid-train: error: --reuse {missing}: does not exist (a folder of finished runs, "
        "e.g. runs/<method>)"]
    assert not (tmp_path / "o").exists()  # refused before anything was written
    bad = runner.invoke(app, ["--method", "ts", "--params", str(project), "--reuse",
                              str(source)])
    assert bad.exit_code == 2 and "give it with --grid or --sweep" in bad.output
    # --reuse may also name a run folder itself
    ok = runner.invoke(app, ["--method", "ts", "--params", str(project), "--out",
                             str(tmp_path / "o"), "--sweep", "methods.ts.alpha=[4.0]",
                             "--reuse", str(source / "ts"), "-q"])
    assert ok.exit_code == 0, ok.output
    assert f"(reused from {source / 'ts'})" in ok.output
    assert _files(tmp_path / "o" / "alpha=4.0") == _files(source / "ts")
