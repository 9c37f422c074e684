"""`run_history`: the dvclive TSVs of a run, as the long table `dvc plots` draws."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from amid.distill.runlog import open_live
from amid.evaluate.evaluate import evaluate_run
from amid.evaluate.history import run_history

# as the trainer logs them: 0-based epochs, one value per metric and epoch; the
# teacher's accuracy only from epoch 1 on (a metric may start late)
HISTORY = [{"epoch": e, "loss_total": 2.0 / (e + 1), "loss_ce": 1.5 - 0.25 * e,
            "val_acc_student": 0.2 * e, **({"val_acc_teacher": 0.5 + 0.1 * e} if e else {})}
           for e in range(3)]


def test_every_logged_metric_becomes_rows_with_epochs_from_one(tmp_path: Path) -> None:
    open_live(tmp_path / "run", HISTORY)  # the TSVs in dvclive's layout
    expected = pd.DataFrame(
        [(row["epoch"] + 1, name, value) for row in HISTORY
         for name, value in row.items() if name != "epoch"],
        columns=["epoch", "metric", "value"],
    ).sort_values(["metric", "epoch"], ignore_index=True)
    got = run_history(tmp_path / "run")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_a_metric_in_a_subfolder_is_named_by_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "dvclive" / "plots" / "metrics" / "disc"
    folder.mkdir(parents=True)
    (folder / "w_f.tsv").write_text("timestamp\tstep\tw_f\n1\t0\t0.5\n2\t1\t0.25\n")
    got = run_history(tmp_path / "run")
    assert got.values.tolist() == [[1, "disc/w_f", 0.5], [2, "disc/w_f", 0.25]]


def test_a_run_without_history_still_writes_the_declared_plot_file(
        run_dir: Path, tmp_path: Path) -> None:
    assert not (run_dir / "dvclive").exists()
    evaluate_run(run_dir / "outputs.h5", tmp_path / "m.json", ks=[1])
    table = pd.read_csv(tmp_path / "m" / "history.csv")
    assert table.empty and list(table.columns) == ["epoch", "metric", "value"]


def test_evaluate_run_writes_the_runs_history_beside_its_other_plot_data(
        run_dir: Path, tmp_path: Path) -> None:
    open_live(run_dir, HISTORY)
    evaluate_run(run_dir / "outputs.h5", tmp_path / "m.json", ks=[1])
    written = pd.read_csv(tmp_path / "m" / "history.csv")
    assert len(written) == sum(len(row) - 1 for row in HISTORY)
    teacher = written[written["metric"] == "val_acc_teacher"]
    assert teacher[["epoch", "value"]].values.tolist() == [[2, 0.6], [3, 0.7]]
