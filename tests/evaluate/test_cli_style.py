"""amid-evaluate and amid-predict follow the one CLI style of amid/cli.py (issue 12 item 8).

`-o/--out` is the output everywhere, defaulted where a default makes sense;
`-p/--params` and `-S/--set` where the configuration is read; `-q/--quiet`;
a user error is `<prog>: error: <one line>` on stderr with exit status 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from amid.evaluate.cli import app, predict_app

runner = CliRunner()


def test_run_writes_metrics_of_the_run_name_by_default(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake.write_outputs(Path("runs/base/outputs.h5"), method="baseline", teacher=False)
    result = runner.invoke(app, ["run", "runs/base"])
    assert result.exit_code == 0, result.output
    assert json.loads(Path("metrics/base.json").read_text())["method"] == "baseline"
    assert Path("metrics/base/confusion.csv").is_file()
    assert "-> metrics/base.json" in result.output


def test_short_options_and_quiet(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for fold in (1, 2):
        fake.write_outputs(Path(f"runs/amid_fold{fold}/outputs.h5"), fold=fold)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"extract": {"visual": {}, "audio": {}, "text": {}},
                                      "evaluate": {"ks": [1, 5]}}))
    for fold in (1, 2):
        result = runner.invoke(app, ["run", f"runs/amid_fold{fold}", "-o",
                                     f"m/amid_fold{fold}.json", "-p", str(params),
                                     "-S", "evaluate.ks=[1,2]", "-q"])
        assert result.exit_code == 0 and result.stdout == "", result.output
    assert set(json.loads(Path("m/amid_fold1.json").read_text())["student"]["retrieval"]) == \
        {"R@1", "R@2"}  # -S overrides -p
    # summarize: -o defaults to the common name without the fold suffix
    result = runner.invoke(app, ["summarize", "m/amid_fold1.json", "m/amid_fold2.json", "-q"])
    assert result.exit_code == 0 and result.stdout == "", result.output
    assert json.loads(Path("m/amid.json").read_text())["n"] == 2
    result = runner.invoke(app, ["report", "-m", "m/amid_fold*.json", "-o", "rep", "-q",
                                 "-p", str(params)])
    assert result.exit_code == 0 and result.stdout == "", result.output
    assert Path("rep/results.md").is_file()


def test_sweep_defaults_to_metrics_sweeps_name(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake.write_outputs(Path("runs/sweeps/tau/seed=0/outputs.h5"))
    Path("runs/sweeps/tau/sweep.json").write_text(json.dumps({"method": "amid", "members": [
        {"name": "seed=0", "overrides": {"train.seed": 0}}]}))
    result = runner.invoke(app, ["sweep", "runs/sweeps/tau", "-q"])
    assert result.exit_code == 0 and result.stdout == "", result.output
    assert Path("metrics/sweeps/tau.json").is_file() and Path("metrics/sweeps/tau.md").is_file()


@pytest.mark.parametrize(("command", "args", "message"), [
    ("amid-evaluate", ["summarize", "missing.json", "-o", "s.json"],
     "amid-evaluate: error: metrics file missing.json does not exist"),
    ("amid-evaluate", ["run", "norun"], "amid-evaluate: error: run outputs norun/outputs.h5"),
    ("amid-evaluate", ["run", "norun", "-S", "evaluate.ks=[1]"],
     "amid-evaluate: error: --set needs a params.yaml"),
    ("amid-predict", ["norun"], "amid-predict: error: run folder norun does not exist"),
    ("amid-evaluate", ["predict", "norun"],
     "amid-evaluate: error: run folder norun does not exist"),
])
def test_errors_are_one_prog_prefixed_line(tmp_path, command, args, message):
    exe = Path(sys.executable).parent / command
    done = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith(message) and len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize(("target", "args", "fragments"), [
    (app, ["run", "--help"], ["-o", "--out", "metrics/<run name>.json", "-p", "-S", "-q"]),
    (app, ["summarize", "--help"], ["-o", "-q", "_fold<k>"]),
    (app, ["sweep", "--help"], ["-o", "metrics/sweeps/<folder name>.json", "-p", "-S", "-q"]),
    (app, ["report", "--help"], ["-o", "--dataset", "-p", "-S", "-q", "are removed"]),
    (app, ["export", "--help"], ["-o", "-q", "onnx"]),
    (predict_app, ["--help"], ["--media", "--cache", "--cache-dir", "-o", "-q", "predicted"]),
])
def test_help_names_the_options(target, args, fragments):
    result = runner.invoke(target, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
