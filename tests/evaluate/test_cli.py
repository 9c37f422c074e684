"""amid-evaluate run / summarize / report end to end through typer, and its error path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import yaml
from typer.testing import CliRunner

from amid.evaluate.cli import app

runner = CliRunner()


def test_run_summarize_report(tmp_path: Path, fake, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the evaluate defaults apply
    for fold, all_right in ((1, False), (2, True)):
        fake.write_outputs(Path(f"runs/amid_fold{fold}/outputs.h5"), fold=fold,
                           all_right=all_right)
        result = runner.invoke(app, ["run", f"runs/amid_fold{fold}",
                                     "--out", f"metrics/amid_fold{fold}.json"])
        assert result.exit_code == 0, result.output
    first = json.loads(Path("metrics/amid_fold1.json").read_text())
    assert first["fold"] == 1 and first["student"]["top1"] == 0.75
    # a gallery of 4: R@5 .. R@50 rank the whole gallery, trivially 100 %, so left out
    assert set(first["student"]["retrieval"]) == {"R@1"}
    assert set(first["omitted"]) == {f"student.retrieval.R@{k}" for k in (5, 10, 20, 50)}
    assert Path("metrics/amid_fold1/confusion.csv").is_file()

    result = runner.invoke(app, ["summarize", "metrics/amid_fold1.json",
                                 "metrics/amid_fold2.json", "--out", "metrics/amid.json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(Path("metrics/amid.json").read_text())
    assert summary["student"]["top1"] == np.mean([0.75, 1.0])
    assert summary["std"]["student"]["top1"] == np.std([0.75, 1.0])

    fake.write_history(Path("runs/amid_fold1"), "acc_gap", [0.2, 0.1])
    result = runner.invoke(app, ["report", "--metrics", "metrics/*.json", "--runs", "runs",
                                 "--out", "reports"])
    assert result.exit_code == 0, result.output
    text = Path("reports/results.md").read_text()
    assert "| amid (n=2) | **87.5 ± 12.5** |" in text
    assert Path("reports/gap_over_epochs.png").stat().st_size > 1000


def _val_run(tmp_path: Path, fake, split: str) -> tuple[Path, Path]:
    """A run whose scored split is `val` only, and a params file with ks [1, 3], `split`."""
    outputs = fake.write_outputs(tmp_path / "run" / "outputs.h5")
    with h5py.File(outputs, "a") as f:
        f.move("test", "val")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "extract": {"visual": {}, "audio": {}, "text": {}},
        "evaluate": {"ks": [1, 3], "split": split},
    }))
    return outputs, params


def test_params_file_sets_ks_and_split(tmp_path: Path, fake) -> None:
    outputs, params = _val_run(tmp_path, fake, "val")
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["run", str(outputs), "--out", str(out), "--params", str(params),
                                 "--set", "evaluate.chunk_size=2"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["student"]["retrieval"] == {"R@1": 0.5, "R@3": 1.0}



def test_params_and_set_before_the_subcommand(tmp_path: Path, fake) -> None:
    """`amid-evaluate -p FILE -S k=v run ...` reads FILE and the override, as `run -p FILE`
    does (issue 22 item 9); a -p after the subcommand wins over one before it."""
    outputs, params = _val_run(tmp_path, fake, "test")  # the override gives `val`
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["-p", str(params), "-S", "evaluate.split=val", "run",
                                 str(outputs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    # only the file's ks and the override's split give these keys (defaults: 1, 5, 10, ...)
    assert json.loads(out.read_text())["student"]["retrieval"] == {"R@1": 0.5, "R@3": 1.0}

    result = runner.invoke(app, ["-p", str(tmp_path / "nope.yaml"), "run", str(outputs),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "nope.yaml does not exist" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["-p", str(tmp_path / "nope.yaml"), "-S", "evaluate.split=val",
                                 "run", str(outputs), "--out", str(out), "-p", str(params)])
    assert result.exit_code == 0, result.output

def test_user_errors_exit_2_with_one_line(tmp_path: Path, fake) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "nothing"), "--out",
                                 str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert "error:" in result.output and "outputs.h5 do not exist" in result.output
    assert "Traceback" not in result.output

    outputs = fake.write_outputs(tmp_path / "run" / "outputs.h5")
    with h5py.File(outputs, "a") as f:
        del f["test/student/embeddings"]
    result = runner.invoke(app, ["run", str(outputs.parent), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 2
    assert f"{outputs}: missing dataset /test/student/embeddings" in result.output
    assert not (tmp_path / "m.json").exists()

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"extract": {"visual": {}, "audio": {}, "text": {}},
                                      "evaluate": {"kz": [1]}}))
    result = runner.invoke(app, ["run", str(outputs), "--out", "x", "--params", str(params)])
    assert result.exit_code == 2 and "evaluate.kz" in result.output

    result = runner.invoke(app, ["report", "--metrics", str(tmp_path / "none*.json")])
    assert result.exit_code == 2 and "no metrics files match" in result.output


def test_console_scripts_are_installed(tmp_path: Path) -> None:
    """The entry points of pyproject.toml resolve (stderr-only error, exit 2, no traceback)."""
    exe = Path(sys.executable).parent
    for script, args in (("amid-evaluate", ["summarize", str(tmp_path / "missing.json"),
                                            "--out", str(tmp_path / "s.json")]),
                         ("amid-predict", [str(tmp_path / "norun")])):
        done = subprocess.run([str(exe / script), *args], capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "120"}, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stdout == "" and "Traceback" not in done.stderr
        assert "error:" in done.stderr
