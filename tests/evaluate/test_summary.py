"""summarize: mean and std over folds / seeds, checked against numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amid.errors import AmidError
from amid.evaluate.summary import is_summary, read_metrics, summarize


def _metrics(fold: int, rng: np.random.Generator, teacher: bool = True) -> dict:
    data = {
        "method": "amid", "dataset": "iemocap", "fold": fold, "seed": 0,
        "student": {
            "top1": float(rng.random()), "top5": float(rng.random()),
            "wa": float(rng.random()), "ua": float(rng.random()),
            "retrieval": {"R@1": float(rng.random()), "R@5": float(rng.random())},
        },
    }
    if teacher:
        data["teacher"] = {"top1": float(rng.random()), "ua": float(rng.random())}
    return data


def _write(tmp_path: Path, runs: list[dict]) -> list[Path]:
    paths = []
    for k, run in enumerate(runs):
        path = tmp_path / f"amid_fold{k + 1}.json"
        path.write_text(json.dumps(run))
        paths.append(path)
    return paths


def test_mean_and_std_of_every_metric(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    runs = [_metrics(k, rng) for k in range(1, 6)]
    summary = summarize(_write(tmp_path, runs))
    for block, key in [("student", "top1"), ("student", "ua"), ("teacher", "top1")]:
        values = [r[block][key] for r in runs]
        assert summary[block][key] == pytest.approx(np.mean(values), abs=1e-15)
        assert summary["std"][block][key] == pytest.approx(np.std(values), abs=1e-15)
    r5 = [r["student"]["retrieval"]["R@5"] for r in runs]
    assert summary["student"]["retrieval"]["R@5"] == pytest.approx(np.mean(r5))
    assert summary["std"]["student"]["retrieval"]["R@5"] == pytest.approx(np.std(r5))
    assert summary["n"] == 5
    assert summary["folds"] == [1, 2, 3, 4, 5]
    assert summary["fold"] is None and summary["seed"] == 0
    assert (summary["method"], summary["dataset"]) == ("amid", "iemocap")
    assert "count" not in summary
    assert is_summary(summary)


def test_metric_missing_from_some_files_is_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    runs = [_metrics(1, rng), _metrics(2, rng, teacher=False), _metrics(3, rng)]
    summary = summarize(_write(tmp_path, runs))
    assert summary["teacher"]["top1"] == pytest.approx(
        (runs[0]["teacher"]["top1"] + runs[2]["teacher"]["top1"]) / 2
    )
    assert summary["count"] == {"teacher": {"top1": 2, "ua": 2}}


def test_seeds_differ_so_seed_is_null(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    runs = [_metrics(1, rng), _metrics(1, rng)]
    runs[1]["seed"] = 1
    summary = summarize(_write(tmp_path, runs))
    assert summary["seed"] is None and summary["seeds"] == [0, 1]


def test_refuses_mixed_methods_and_nested_summaries(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    runs = [_metrics(1, rng), _metrics(2, rng)]
    runs[1]["method"] = "baseline"
    with pytest.raises(AmidError, match="different methods"):
        summarize(_write(tmp_path, runs))
    runs[1]["method"] = "amid"
    paths = _write(tmp_path, runs)
    nested = tmp_path / "summary.json"
    nested.write_text(json.dumps(summarize(paths)))
    with pytest.raises(AmidError, match="not summaries: .*summary.json"):
        summarize([*paths, nested])


def test_read_metrics_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AmidError, match=r"bad\.json: not valid JSON"):
        read_metrics(bad)
    other = tmp_path / "other.json"
    other.write_text('{"loss": 1}')
    with pytest.raises(AmidError, match=r"other\.json: not a metrics file"):
        read_metrics(other)
    with pytest.raises(AmidError, match="does not exist"):
        read_metrics(tmp_path / "missing.json")
    with pytest.raises(AmidError, match="at least one"):
        summarize([])
