"""Paper-style tables (row order, bold best, fold aggregation) and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amid.errors import AmidError
from amid.evaluate import figures
from amid.evaluate.evaluate import evaluate_run
from amid.evaluate.report import collect_rows, find_metrics, markdown_table, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _write(folder: Path, name: str, method: str, student: dict | None = None,
           teacher: dict | None = None, fold: int | None = None, dataset: str = "toy") -> Path:
    data: dict = {"method": method, "dataset": dataset, "fold": fold, "seed": 0}
    if student is not None:
        data["student"] = student
    if teacher is not None:
        data["teacher"] = teacher
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def _student(top1: float, r1: float = 0.5) -> dict:
    return {"top1": top1, "top5": 0.9, "wa": top1, "ua": top1 - 0.05,
            "retrieval": {"R@1": r1, "R@5": 0.8}}


def _table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return header, rows


def test_rows_in_paper_order_with_best_in_bold(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path, "crd", "crd", _student(0.70, r1=0.61)),
        _write(tmp_path, "amid", "amid", _student(0.738), {"top1": 0.76}),
        # the teacher method's file also has its (by-product) student path: not shown
        _write(tmp_path, "teacher", "teacher", _student(0.99),
               {"top1": 0.757, "wa": 0.757, "ua": 0.73}),
        _write(tmp_path, "ts", "ts", _student(0.72), {"top1": 0.75}),
        _write(tmp_path, "baseline", "baseline", _student(0.667)),
    ]
    tables = collect_rows(paths)
    rows = tables["toy"]  # a dataset the paper does not report: no paper column
    assert [r.label for r in rows] == ["baseline", "teacher", "ts", "amid", "crd"]
    header, cells = _table(markdown_table(rows))
    assert header == ["Method", "Top-1", "Top-5", "WA", "UA", "R@1", "R@5", "Teacher Top-1",
                      "Gap"]
    assert list(cells) == ["baseline", "teacher", "ts", "amid", "crd"]
    assert cells["amid"]["Top-1"] == "**73.8**"
    assert cells["teacher"]["Top-1"] == "75.7"  # the full-modality reference is not bolded
    assert cells["teacher"]["Top-5"] == "–" and cells["teacher"]["Gap"] == "–"
    assert cells["baseline"]["Top-1"] == "66.7"
    assert cells["crd"]["R@1"] == "**61.0**" and cells["amid"]["R@1"] == "50.0"
    assert cells["amid"]["Teacher Top-1"] == "**76.0**"
    assert cells["amid"]["Gap"] == "**2.2**" and cells["ts"]["Gap"] == "3.0"
    assert cells["baseline"]["Gap"] == "–" and cells["baseline"]["Teacher Top-1"] == "–"
    # ties are all bold
    for name in ("baseline", "ts", "amid", "crd"):
        assert cells[name]["Top-5"] == "**90.0**"


def test_folds_become_one_row_with_mean_and_std(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path, "amid_fold1", "amid", _student(0.5), fold=1, dataset="iemocap"),
        _write(tmp_path, "amid_fold2", "amid", _student(0.7), fold=2, dataset="iemocap"),
        _write(tmp_path, "baseline_fold1", "baseline", _student(0.4), fold=1, dataset="iemocap"),
    ]
    rows = collect_rows(paths)["iemocap"]
    assert [(r.label, r.n) for r in rows] == [("baseline", 1), ("amid", 2)]
    _, cells = _table(markdown_table(rows))
    assert cells["amid (n=2)"]["Top-1"] == "**60.0 ± 10.0**"
    assert cells["baseline"]["Top-1"] == "40.0"


def test_summary_file_stands_for_its_folds(tmp_path: Path) -> None:
    from amid.evaluate.summary import summarize

    folds = [_write(tmp_path, f"amid_fold{k}", "amid", _student(0.1 * k), fold=k)
             for k in (1, 2, 3)]
    summary = tmp_path / "amid.json"
    summary.write_text(json.dumps(summarize(folds)))
    rows = collect_rows([*folds, summary])["toy"]
    assert len(rows) == 1 and rows[0].n == 3
    assert rows[0].metrics["student"]["top1"] == pytest.approx(0.2)


def test_variants_of_one_method_are_told_apart_by_file_name(tmp_path: Path) -> None:
    paths = [
        _write(tmp_path, "amid", "amid", _student(0.7)),
        _write(tmp_path, "amid_ccl", "amid", _student(0.6)),
    ]
    assert [r.label for r in collect_rows(paths)["toy"]] == ["amid", "amid_ccl"]


def test_find_metrics_skips_foreign_json_but_not_broken_files(tmp_path: Path) -> None:
    good = _write(tmp_path, "amid", "amid", _student(0.7))
    (tmp_path / "dvclive.json").write_text('{"loss": 0.1}')
    found, skipped = find_metrics([str(tmp_path / "*.json")])
    assert found == [good] and skipped == [tmp_path / "dvclive.json"]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AmidError, match="broken.json"):
        find_metrics([str(tmp_path / "*.json")])


def test_history_prefers_validation_logs(tmp_path: Path, fake) -> None:
    run = tmp_path / "amid"
    fake.write_history(run, "train/gap", [0.5, 0.4])
    val = fake.write_history(run, "val/gap", [0.3, 0.2])
    fake.write_history(run, "loss", [9.0])  # not a gap metric
    assert figures.find_history(run, figures.GAP_METRIC) == val
    hist = figures.read_history(val)
    assert hist["step"].tolist() == [0, 1] and hist["value"].tolist() == [0.3, 0.2]
    assert figures.find_history(run, figures.COS_METRIC) is None


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_report_end_to_end_writes_tables_and_figures(tmp_path: Path, fake) -> None:
    metrics = tmp_path / "metrics"
    runs = tmp_path / "runs"
    for name, all_right in (("amid", True), ("baseline", False)):
        outputs = fake.write_outputs(runs / name / "outputs.h5", method=name,
                                     teacher=name == "amid", all_right=all_right)
        evaluate_run(outputs, metrics / f"{name}.json", ks=[1, 5])
    fake.write_history(runs / "amid", "gap", [0.3, 0.2, 0.1])
    fake.write_history(runs / "amid", "val/cos_same_class", [0.1, 0.5, 0.7])
    fake.write_history(runs / "baseline", "val/cos_same_class", [0.1, 0.2, 0.3])
    out = tmp_path / "reports"
    written = write_report(sorted(metrics.glob("*.json")), out, runs)
    names = sorted(p.name for p in written)
    assert names == sorted([
        "results.md", "per_class.png", "confusion_amid.png", "confusion_baseline.png",
        "embedding_amid.png", "embedding_baseline.png", "gap_over_epochs.png",
        "cos_same_class.png", "curves.csv",
    ])
    curves = pd.read_csv(out / "curves.csv")  # one row per (run, epoch), NaN where not logged
    assert list(curves.columns) == ["epoch", "run", "method", "label", "acc_gap",
                                    "cos_same_class"]
    assert curves["run"].tolist() == ["amid"] * 3 + ["baseline"] * 3
    assert curves["epoch"].tolist() == [1, 2, 3, 1, 2, 3]
    np.testing.assert_allclose(curves["acc_gap"][:3], [0.3, 0.2, 0.1])
    assert curves["acc_gap"][3:].isna().all()
    np.testing.assert_allclose(curves["cos_same_class"], [0.1, 0.5, 0.7, 0.1, 0.2, 0.3])
    assert all(_is_png(p) for p in written if p.suffix == ".png")
    _, cells = _table((out / "results.md").read_text())
    assert cells["amid"]["Top-1"] == "**100.0**" and cells["baseline"]["Top-1"] == "75.0"
    # teacher 2/3, student 4/4: a teacher below its student is no gap closed, not bolded
    assert cells["amid"]["Gap"] == "-33.3"


def test_seeds_of_a_method_become_one_row_and_one_line(tmp_path: Path, fake) -> None:
    """runs/amid + runs/amid_seed1 (dvc.yaml's train-seed stages): one table row with
    mean ± std, one curve per method (the mean), one diagnostics figure per method."""
    metrics, runs = tmp_path / "metrics", tmp_path / "runs"
    for name, right in (("amid", True), ("amid_seed1", False)):
        outputs = fake.write_outputs(runs / name / "outputs.h5", method="amid", teacher=True,
                                     all_right=right)
        evaluate_run(outputs, metrics / f"{name}.json", ks=[1])
    fake.write_history(runs / "amid", "gap", [0.4, 0.2])
    fake.write_history(runs / "amid_seed1", "gap", [0.2, 0.0])
    for run, scale in (("amid", 1.0), ("amid_seed1", 3.0)):
        fake.write_history(runs / run, "grad_ts", [2.0 * scale, 1.0 * scale])
        fake.write_history(runs / run, "train_acc_student", [0.5, 1.0])
    out = tmp_path / "reports"
    written = {p.name for p in write_report(sorted(metrics.glob("*.json")), out, runs)}
    assert "diagnostics_amid.png" in written and "diagnostics_amid_seed1.png" not in written
    _, cells = _table((out / "results.md").read_text())
    assert list(cells) == ["amid (n=2)"]  # student Top-1 4/4 and 3/4: mean 87.5
    assert cells["amid (n=2)"]["Top-1"].startswith("**87.5 ±")
    curves = pd.read_csv(out / "curves.csv")
    assert curves["method"].tolist() == ["amid"] * 4
    # the averages the figures draw, against a hand computation
    grads = figures._histories([runs / "amid", runs / "amid_seed1"], figures.GRAD_METRIC)
    assert list(grads) == ["grad_ts"]
    np.testing.assert_allclose(grads["grad_ts"].to_numpy(), [(2 + 6) / 2, (1 + 3) / 2])


def test_diagnostics_figure_only_with_diagnostics(tmp_path: Path, fake) -> None:
    fake.write_history(tmp_path / "run", "gap", [0.1, 0.2])
    assert figures.diagnostics_figure([tmp_path / "run"], tmp_path / "d.png", "x") == []
    fake.write_history(tmp_path / "run", "val_acc_teacher", [0.1, 0.2])
    assert _is_png(figures.diagnostics_figure([tmp_path / "run"], tmp_path / "d.png", "x")[0])


def test_report_without_histories_or_plot_data(tmp_path: Path) -> None:
    path = _write(tmp_path, "amid", "amid", _student(0.7))
    written = write_report([path], tmp_path / "out", tmp_path / "no_runs_here")
    assert [p.name for p in written] == ["results.md"]
    with pytest.raises(AmidError, match="no metrics files"):
        write_report([], tmp_path / "out")
