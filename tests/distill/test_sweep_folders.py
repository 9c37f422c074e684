"""The folders of `amid-train --repeat-seeds` (`sweep.run_repeats`) and how the evaluate
stage reads them back: `amid-evaluate run` scores each seed into its own metrics file and
the report's `run_folders` lists the seeds' runs, not their parent folder."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from amid.config import load_config
from amid.distill.sweep import run_repeats
from amid.distill.train import train
from amid.errors import ConfigError
from amid.evaluate.cli import app as evaluate_app
from amid.evaluate.report import run_folders
from amid.schema import to_dict

from .conftest import make_dataset


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny dataset and its params.yaml: baseline, one epoch, train.seed 3, repeats 1, 5."""
    syn = make_dataset(tmp_path_factory.mktemp("data"), n_classes=3, per_class=10)
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs, cfg.train.seed = 1, 3
    cfg.train.model.dropout = 0.0  # with dropout a stacked member draws its own masks
    raw = to_dict(cfg)
    raw.setdefault("pipeline", {})["repeat_seeds"] = [1, 5]
    params = syn.root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params, raw


@pytest.fixture(scope="module")
def repeats(project, tmp_path_factory) -> Path:
    params, _ = project
    out = tmp_path_factory.mktemp("runs") / "mine"
    run_repeats("baseline", params, [], out, live=False)
    return out


def _seed(run: Path) -> int:
    with h5py.File(run / "outputs.h5", "r") as f:
        return int(f.attrs["seed"])


def _logits(run: Path) -> np.ndarray:
    with h5py.File(run / "outputs.h5", "r") as f:
        return f["test/student/logits"][()]


def test_repeats_name_the_folders_after_out_and_train_each_seed(project, repeats, tmp_path):
    # <out>/<name> is train.seed, <out>/<name>_seed<k> each repeat (`name`: out's folder name)
    members = sorted(p.name for p in repeats.iterdir() if p.is_dir())
    assert members == ["mine", "mine_seed1", "mine_seed5"]
    assert {m: _seed(repeats / m) for m in members} == {"mine": 3, "mine_seed1": 1,
                                                        "mine_seed5": 5}
    sweep = json.loads((repeats / "sweep.json").read_text())
    assert sweep["axes"] == {"train.seed": [3, 1, 5]}
    assert [m["name"] for m in sweep["members"]] == ["mine", "mine_seed1", "mine_seed5"]
    assert all(m["error"] is None for m in sweep["members"])
    # a repeat is the run a lone amid-train at that seed gives (another way to the numbers)
    params, _ = project
    lone = train("baseline", load_config(params, ["train.seed=5"]), tmp_path / "lone",
                 live=False)
    done = json.loads((repeats / "sweep.json").read_text())["members"][2]
    assert done["epochs"] == len(lone) == 1
    lone_logits = _logits(tmp_path / "lone")
    # the stack batches the seeds' matrix products: equal up to float rounding
    np.testing.assert_allclose(_logits(repeats / "mine_seed5"), lone_logits, rtol=1e-5,
                               atol=1e-5)
    assert not np.allclose(_logits(repeats / "mine_seed1"), lone_logits, atol=1e-3)


def test_a_repeat_of_train_seed_is_refused_before_anything_is_written(project, tmp_path):
    params, raw = project
    bad = copy.deepcopy(raw)
    bad["pipeline"]["repeat_seeds"] = [1, 3]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"repeat_seeds \[1, 3\] lists train.seed 3"):
        run_repeats("baseline", path, [], tmp_path / "out", live=False)
    assert not (tmp_path / "out").exists()


def test_the_evaluate_stage_scores_each_seed_into_its_own_file(repeats, tmp_path):
    out = tmp_path / "metrics"
    res = CliRunner().invoke(evaluate_app, ["run", str(repeats), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.json")) == [
        "mine.json", "mine_seed1.json", "mine_seed5.json"]
    assert {p.stem: json.loads(p.read_text())["seed"] for p in out.glob("*.json")} == {
        "mine": 3, "mine_seed1": 1, "mine_seed5": 5}


def test_run_folders_open_a_folder_of_seeds_and_nothing_else(repeats, tmp_path):
    runs = tmp_path / "runs"
    (runs / "baseline").mkdir(parents=True)  # a plain run folder
    grid = runs / "alpha"  # a grid over more than the seed: one folder of the report
    (grid / "alpha=1,seed=0").mkdir(parents=True)
    (grid / "sweep.json").write_text(json.dumps(
        {"axes": {"methods.amid.alpha": [1], "train.seed": [0]}, "members": []}))
    broken = runs / "broken"  # a damaged sweep.json: the folder stands for itself
    (broken / "inner").mkdir(parents=True)
    (broken / "sweep.json").write_text("{not json")
    listed = runs / "ts"  # a sweep.json whose axes are not a mapping
    (listed / "inner").mkdir(parents=True)
    (listed / "sweep.json").write_text(json.dumps({"axes": ["train.seed"]}))
    (runs / "notes.txt").write_text("not a folder")
    seeds = runs / "mine"
    seeds.symlink_to(repeats, target_is_directory=True)
    found = run_folders(runs)
    assert [p.name for p in found] == ["alpha", "baseline", "broken", "mine", "mine_seed1",
                                       "mine_seed5", "ts"]
    assert {p.parent for p in found if p.name.startswith("mine")} == {seeds}


def test_predict_and_export_of_the_folder_of_seeds_name_its_runs(repeats, tmp_path,
                                                                 monkeypatch):
    """After dvc repro runs/amid holds the seeds: `amid-evaluate export runs/amid` (the
    README's command) is one line naming the runs to give instead, and writes nothing."""
    from amid.distill.inference import load_student
    from amid.errors import CheckpointError

    runs = [str(repeats / n) for n in ("mine", "mine_seed1", "mine_seed5")]
    with pytest.raises(CheckpointError) as failed:
        load_student(repeats)
    assert str(failed.value) == (
        f"{repeats} holds the runs of a sweep or of --repeat-seeds (sweep.json), not one run: "
        f"give one of them ({', '.join(runs)})")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(evaluate_app, ["export", str(repeats), "--format", "torchscript"])
    assert res.exit_code == 2 and "holds the runs of a sweep" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "exports").exists()
    _, meta = load_student(runs[1])  # each seed is a run of its own
    assert meta["target"] == ["visual"]
