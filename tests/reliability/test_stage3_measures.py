"""Evaluation that measures nothing is refused or left out, never written as a result.

Issue 14 item 6 and issue 12 item 9. Cause: the metrics were computed for
whatever the configuration asked, however degenerate: a query finding itself
in a gallery that holds it, K at or above the gallery size or the number of
classes (100 % by construction), the `teacher` method's untrained student
path, and summaries that skipped or averaged values that are not numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from amid.evaluate.cli import app
from amid.evaluate.metrics import recall_at_k
from amid.evaluate.report import collect_rows, markdown_table

from .conftest import assert_user_error

runner = CliRunner()


def _outputs(path: Path, *, n_classes: int = 8, n_train: int = 40, n_test: int = 12,
             method: str = "amid", seed: int = 0) -> dict:
    """A random outputs.h5 (embeddings clustered by class); returns its arrays."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, 6))
    data = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs.update(classes=json.dumps([f"c{k}" for k in range(n_classes)]), method=method,
                       dataset="toy", fold="null", seed=0)
        for split, n in (("train", n_train), ("test", n_test)):
            labels = np.arange(n) % n_classes
            emb = (centres[labels] + 1.5 * rng.normal(size=(n, 6))).astype(np.float32)
            logits = rng.normal(size=(n, n_classes)).astype(np.float32)
            g = f.create_group(split)
            g.create_dataset("ids", data=[f"{split}{k}" for k in range(n)],
                             dtype=h5py.string_dtype())
            g["labels"] = labels
            g["student/embeddings"], g["student/logits"] = emb, logits
            g["teacher/embeddings"], g["teacher/logits"] = emb[:, :4], logits + 1
            data[split] = (emb, labels, logits)
    return data


def _params(tmp_path: Path, **evaluate) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"extract": {"visual": {}, "audio": {}, "text": {}},
                                    "evaluate": evaluate}))
    return path


def _brute_force_recall(q, ql, g, gl, k, leave_out_self):
    """R@k by sorting every query's cosine similarities (ties: lower index first)."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    hits = 0
    for i in range(len(q)):
        order = [j for j in np.argsort(-(gn @ qn[i]), kind="stable")
                 if not (leave_out_self and j == i)]
        hits += any(gl[j] == ql[i] for j in order[:k])
    return hits / len(q)


def test_split_equal_to_gallery_split_leaves_each_query_out_of_its_gallery(tmp_path):
    data = _outputs(tmp_path / "run" / "outputs.h5")
    out = tmp_path / "m.json"
    params = _params(tmp_path, split="train", gallery_split="train", ks=[1, 5])
    result = runner.invoke(app, ["run", str(tmp_path / "run"), "-o", str(out), "-p", str(params)])
    assert result.exit_code == 0, result.output
    got = json.loads(out.read_text())["student"]["retrieval"]
    emb, labels, _ = data["train"]
    for k in (1, 5):
        expected = _brute_force_recall(emb, labels, emb, labels, k, leave_out_self=True)
        assert got[f"R@{k}"] == pytest.approx(expected)
    assert got["R@1"] < 1.0  # a query finding itself would give exactly 1.0


@pytest.mark.parametrize("gallery_chunk", [7, 10_000])
def test_recall_at_k_exclude_matches_brute_force(gallery_chunk):
    rng = np.random.default_rng(1)
    g = rng.normal(size=(30, 4))
    gl = rng.integers(0, 4, 30)
    got = recall_at_k(g, gl, g, gl, ks=(1, 3), chunk_size=8, gallery_chunk_size=gallery_chunk,
                      exclude=np.arange(30))
    for k in (1, 3):
        assert got[f"R@{k}"] == pytest.approx(_brute_force_recall(g, gl, g, gl, k, True))


def test_k_at_or_above_the_gallery_size_is_omitted_with_a_note(tmp_path):
    _outputs(tmp_path / "run" / "outputs.h5", n_train=40)
    out = tmp_path / "m.json"
    params = _params(tmp_path, ks=[1, 39, 40, 100000])
    result = runner.invoke(app, ["run", str(tmp_path / "run"), "-o", str(out), "-p", str(params)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics["student"]["retrieval"]) == {"R@1", "R@39"}
    assert metrics["omitted"]["student.retrieval.R@100000"] == \
        "k = 100000 >= gallery size 40: trivially 100 %"
    assert "student.retrieval.R@40" in metrics["omitted"]
    notes = [ln for ln in result.output.splitlines() if "R@100000" in ln]
    assert notes and "trivially 100 %" in notes[0]


def test_top5_with_five_classes_or_fewer_is_omitted(tmp_path):
    for n_classes, has_top5 in ((5, False), (6, True)):
        _outputs(tmp_path / f"run{n_classes}" / "outputs.h5", n_classes=n_classes)
        out = tmp_path / f"m{n_classes}.json"
        result = runner.invoke(app, ["run", str(tmp_path / f"run{n_classes}"), "-o", str(out)])
        assert result.exit_code == 0, result.output
        metrics = json.loads(out.read_text())
        for block in ("student", "teacher"):
            assert ("top5" in metrics[block]) is has_top5
            assert (f"{block}.top5" in metrics.get("omitted", {})) is not has_top5


def test_teacher_method_has_no_student_block_and_still_reports(tmp_path):
    """`dvc metrics show` listed the teacher run's untrained student path (Top-1 12.5 %)."""
    data = _outputs(tmp_path / "runs" / "teacher" / "outputs.h5", method="teacher")
    out = tmp_path / "metrics" / "teacher.json"
    result = runner.invoke(app, ["run", str(tmp_path / "runs" / "teacher"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert "student" not in metrics
    _, labels, logits = data["test"]
    assert metrics["teacher"]["top1"] == pytest.approx(np.mean((logits + 1).argmax(1) == labels))
    rows = collect_rows([out])["toy"]
    table = markdown_table(rows)
    assert f"| teacher | {100 * metrics['teacher']['top1']:.1f} |" in table


def _metrics_file(path: Path, top1) -> Path:
    path.write_text(json.dumps({"method": "amid", "dataset": "toy", "fold": None, "seed": 0,
                                "student": {"top1": top1, "retrieval": {"R@1": 0.5}}}))
    return path


@pytest.mark.parametrize(("value", "shown"), [("high", '"high", not a number'),
                                              (None, "null, not a number"),
                                              (float("nan"), "nan, not a finite number"),
                                              (float("inf"), "inf, not a finite number")])
def test_summarize_refuses_a_metric_that_is_not_a_finite_number(tmp_path, value, shown,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml: the report takes every dataset
    good = _metrics_file(tmp_path / "amid_seed0.json", 0.7)
    bad = _metrics_file(tmp_path / "amid_seed1.json", value)
    out = tmp_path / "amid.json"
    result = runner.invoke(app, ["summarize", str(good), str(bad), "-o", str(out)])
    assert_user_error(result, str(bad), f"student.top1 is {shown}")
    assert not out.exists()
    report = runner.invoke(app, ["report", "-m", str(tmp_path / "amid_seed*.json"), "-o",
                                 str(tmp_path / "reports")])
    assert_user_error(report, str(bad), "student.top1")
