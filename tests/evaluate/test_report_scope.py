"""The report shows the dataset at hand, and never keeps figures of an earlier report.

Issue 12 item 3: a clone ships demo metrics; a user's first report on their own
runs listed a `demo` table beside theirs and left the demo figures in reports/.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from amid.evaluate.cli import app
from amid.evaluate.evaluate import evaluate_run

runner = CliRunner()


def _project(root: Path, fake) -> None:
    """metrics/ with the clone's demo files and the user's own (dataset `mine`), runs/ too."""
    for name in ("baseline", "teacher", "amid", "ts", "ts_ta"):  # what the clone ships
        outputs = fake.write_outputs(root / "demo_runs" / name / "outputs.h5", method=name,
                                     teacher=name != "baseline", dataset="demo")
        evaluate_run(outputs, root / "metrics" / f"{name}.json", ks=[1])
    for name in ("baseline", "amid"):  # the user's runs overwrite two of them
        outputs = fake.write_outputs(root / "runs" / name / "outputs.h5", method=name,
                                     teacher=name == "amid", dataset="mine",
                                     all_right=name == "amid")
        evaluate_run(outputs, root / "metrics" / f"{name}.json", ks=[1])
        fake.write_history(root / "runs" / name, "val/gap", [0.3, 0.2])
    fake.write_history(root / "runs" / "old_demo_run", "val/gap", [0.9, 0.9])
    (root / "runs" / "old_demo_run" / "config.json").write_text(
        json.dumps({"config": {"dataset": {"name": "demo"}}}))
    (root / "params.yaml").write_text(yaml.safe_dump({
        "dataset": {"name": "mine", "target": ["visual"], "auxiliary": []},
        "extract": {"visual": {}}}))


def test_report_shows_only_the_dataset_of_params_yaml(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, fake)
    result = runner.invoke(app, ["report"])  # the defaults: metrics/*.json, runs, reports
    assert result.exit_code == 0, result.output
    text = Path("reports/results.md").read_text()
    assert "## mine" in text and "## demo" not in text
    assert "metrics files of other datasets were left out: demo (3 files)" in text
    rows = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ")][1:]
    assert rows == ["baseline", "amid"]  # not the demo's teacher, ts, ts_ta
    pngs = sorted(p.name for p in Path("reports").glob("*.png"))
    assert pngs == ["confusion_amid.png", "confusion_baseline.png", "embedding_amid.png",
                    "embedding_baseline.png", "gap_over_epochs.png", "per_class.png"]
    curves = Path("reports/curves.csv").read_text()
    assert "old_demo_run" not in curves and "amid" in curves
    assert "demo (3)" in result.output  # the note on the command line too


def test_without_params_every_table_names_its_dataset(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, fake)
    Path("params.yaml").unlink()
    result = runner.invoke(app, ["report", "-o", "out"])
    assert result.exit_code == 0, result.output
    text = Path("out/results.md").read_text()
    assert "## demo" in text and "## mine" in text
    assert (Path("out") / "demo_confusion_ts.png").is_file()  # figures prefixed per dataset
    result = runner.invoke(app, ["report", "-o", "out", "--dataset", "nope"])
    assert result.exit_code == 2 and "no metrics file of dataset 'nope'" in result.output


def test_figures_of_an_earlier_report_do_not_survive(tmp_path, fake, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _project(tmp_path, fake)
    Path("params.yaml").unlink()
    assert runner.invoke(app, ["report", "--dataset", "demo"]).exit_code == 0
    assert Path("reports/confusion_ts_ta.png").is_file()
    mine = ("notes.png", "confusion.txt", "my_results.md")  # the user's own files stay
    for name in mine:
        Path("reports", name).write_text("keep")
    result = runner.invoke(app, ["report", "--dataset", "mine"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in Path("reports").iterdir()}
    assert "confusion_ts_ta.png" not in names and "embedding_teacher.png" not in names
    assert {"confusion_amid.png", "results.md", "curves.csv", *mine} <= names
