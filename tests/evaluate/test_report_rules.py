"""The report's bolding rules and what its figures draw (issue 22 item 9's report faults).

- A negative teacher-student gap (a teacher below its student) was bolded as the best gap.
- The teacher-alone row's own Teacher Top-1 was bolded, against the footnote saying that
  row is a reference and never bolded.
- The gap figure drew the `teacher` method's untrained student.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from amid.evaluate import figures
from amid.evaluate.evaluate import evaluate_run
from amid.evaluate.report import collect_rows, markdown_table, write_report


def _metrics(folder: Path, name: str, method: str, student: float | None,
             teacher: float | None, dataset: str = "toy") -> Path:
    data: dict = {"method": method, "dataset": dataset, "fold": None, "seed": 0}
    if student is not None:
        data["student"] = {"top1": student}
    if teacher is not None:
        data["teacher"] = {"top1": teacher}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def _cells(text: str) -> dict[str, dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in
            ([c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:])}


def test_a_negative_gap_is_never_the_best(tmp_path):
    paths = [_metrics(tmp_path, "kd", "kd", 0.80, 0.70),  # gap -10: the teacher is weaker
             _metrics(tmp_path, "ts", "ts", 0.60, 0.65),  # gap 5: the smallest real gap
             _metrics(tmp_path, "amid", "amid", 0.50, 0.60)]  # gap 10
    cells = _cells(markdown_table(collect_rows(paths)["toy"]))
    assert (cells["kd"]["Gap"], cells["ts"]["Gap"], cells["amid"]["Gap"]) == \
        ("-10.0", "**5.0**", "10.0")
    assert cells["kd"]["Top-1"] == "**80.0**"  # the other columns keep their rule
    # every gap negative: nothing is bolded in that column
    only_negative = [_metrics(tmp_path, "kd", "kd", 0.80, 0.70),
                     _metrics(tmp_path, "ts", "ts", 0.60, 0.55)]
    cells = _cells(markdown_table(collect_rows(only_negative)["toy"]))
    assert [c["Gap"] for c in cells.values()] == ["-10.0", "-5.0"]


def test_the_teacher_alone_row_is_never_bolded(tmp_path):
    paths = [_metrics(tmp_path, "teacher", "teacher", None, 0.90),  # the highest teacher
             _metrics(tmp_path, "amid", "amid", 0.50, 0.80),
             _metrics(tmp_path, "ts", "ts", 0.55, 0.70)]
    cells = _cells(markdown_table(collect_rows(paths)["toy"]))
    assert cells["teacher"]["Teacher Top-1"] == "90.0"
    assert cells["amid"]["Teacher Top-1"] == "**80.0**"
    assert cells["teacher"]["Top-1"] == "90.0" and cells["ts"]["Top-1"] == "**55.0**"
    assert cells["teacher"]["Gap"] == "–"


def _capture_figures(monkeypatch) -> dict[str, object]:
    """Record each figure the report saves, by file name, instead of rendering it."""
    drawn: dict[str, object] = {}

    def save(fig, path):
        drawn[Path(path).name] = fig
        path.write_bytes(b"")
        return [path]

    monkeypatch.setattr(figures, "save_png", save)
    return drawn


def _legend(fig) -> list[list[str]]:
    return [[t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []
            for ax in fig.axes]


def test_gap_figure_leaves_out_the_teacher_methods_student(tmp_path, fake, monkeypatch):
    metrics, runs = tmp_path / "metrics", tmp_path / "runs"
    for name, method, preset in (("amid", "amid", "recommended"), ("teacher", "teacher", None),
                                 ("ts", "ts", "paper")):
        outputs = fake.write_outputs(runs / name / "outputs.h5", method=method)
        entry = {} if preset is None else {"preset": preset}
        (runs / name / "config.json").write_text(json.dumps(
            {"method": method, "config": {"dataset": {"name": "demo"},
                                          "methods": {name: entry}}}))
        evaluate_run(outputs, metrics / f"{name}.json", ks=[1])
        fake.write_history(runs / name, "val/gap", [0.5, 0.4])
        fake.write_history(runs / name, "val/cos_same_class", [0.1, 0.2])
        fake.write_history(runs / name, "val_acc_student", [0.1, 0.1])
        fake.write_history(runs / name, "val_acc_teacher", [0.6, 0.7])
    # an older teacher run without config.json is known by its folder name
    fake.write_history(runs / "teacher_seed1", "val/gap", [0.9, 0.9])
    drawn = _capture_figures(monkeypatch)
    write_report(sorted(metrics.glob("*.json")), tmp_path / "reports", runs)
    curves = pd.read_csv(tmp_path / "reports" / "curves.csv")
    assert sorted(set(curves["run"])) == ["amid", "ts"]
    assert sorted(_legend(drawn["gap_over_epochs.png"])[0]) == ["amid (recommended)", "ts"]
    assert sorted(_legend(drawn["cos_same_class.png"])[0]) == ["amid (recommended)", "ts"]
    # the teacher's diagnostics keep its own accuracy, not its by-product student's
    assert _legend(drawn["diagnostics_teacher.png"])[1] == ["val teacher"]
    assert _legend(drawn["diagnostics_amid.png"])[1] == ["val student", "val teacher"]
    assert drawn["diagnostics_amid.png"]._suptitle.get_text() == \
        "amid (recommended): diagnostics"
    # the table and the per-run figures carry the label too
    text = (tmp_path / "reports" / "results.md").read_text()
    assert "| amid (recommended) |" in text
    assert "confusion_amid_recommended.png" in drawn
    assert drawn["confusion_amid_recommended.png"].axes[0].get_title() == "amid (recommended)"
