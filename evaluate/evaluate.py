"""One run's metrics (DESIGN 3.3) and the DVC plot data next to them.

`evaluate_outputs` turns `outputs.h5` into the metrics JSON; `write_plot_data`
writes the per-sample and per-class tables that `dvc plots` and the report
draw (confusion, per-class accuracy, a 2-D projection of the embeddings).
The test split is scored; the training split is only the retrieval gallery,
so nothing here selects a model on test data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from amid.errors import AmidError
from amid.evaluate.metrics import (
    confusion_matrix,
    per_class_accuracy,
    recall_at_k,
    top_k_accuracy,
    unweighted_accuracy,
    weighted_accuracy,
)
from amid.evaluate.outputs import ModelOutputs, RunOutputs, read_outputs

DEFAULT_KS = (1, 5, 10, 20, 50)


def classification_metrics(outputs: ModelOutputs) -> dict[str, float]:
    """Top-1, Top-5, WA (plain accuracy) and UA (mean per-class recall)."""
    pred = outputs.logits.argmax(axis=1)
    return {
        "top1": top_k_accuracy(outputs.labels, outputs.logits, 1),
        "top5": top_k_accuracy(outputs.labels, outputs.logits, 5),
        "wa": weighted_accuracy(outputs.labels, pred),
        "ua": unweighted_accuracy(outputs.labels, pred),
    }


def _nonempty(model: ModelOutputs | None) -> bool:
    return model is not None and len(model.ids) > 0


def metrics_from_outputs(
    run: RunOutputs,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 4096,
    split: str = "test",
    gallery_split: str = "train",
    *,
    gallery_chunk_size: int = 8192,
) -> dict[str, Any]:
    """The metrics JSON of an already-loaded run (see `evaluate_outputs`)."""
    scored = run.split(split)
    result: dict[str, Any] = {
        "method": run.method, "dataset": run.dataset, "fold": run.fold, "seed": run.seed,
    }
    if _nonempty(scored.student):
        assert scored.student is not None
        student: dict[str, Any] = classification_metrics(scored.student)
        gallery = run.split(gallery_split).student
        if not _nonempty(gallery):
            raise AmidError(
                f"{run.path}: /{gallery_split}/student is missing or empty; retrieval needs "
                f"the {gallery_split} embeddings as its gallery"
            )
        assert gallery is not None
        student["retrieval"] = recall_at_k(
            scored.student.embeddings, scored.student.labels,
            gallery.embeddings, gallery.labels, ks=ks, chunk_size=chunk_size,
            gallery_chunk_size=gallery_chunk_size,
        )
        result["student"] = student
    if _nonempty(scored.teacher):
        assert scored.teacher is not None
        result["teacher"] = classification_metrics(scored.teacher)
    if "student" not in result and "teacher" not in result:
        raise AmidError(f"{run.path}: /{split} has no student or teacher outputs to score")
    return result


def evaluate_outputs(
    outputs_h5: str | Path,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 4096,
    split: str = "test",
    gallery_split: str = "train",
    *,
    gallery_chunk_size: int = 8192,
) -> dict[str, Any]:
    """Score `outputs.h5`: the DESIGN 3.3 metrics dict, fractions in [0, 1].

    `student` holds top1/top5/wa/ua and `retrieval` (R@K: `split` embeddings
    query the `gallery_split` embeddings by cosine similarity); `teacher` is
    present only for methods that train one. The `teacher` method's `student`
    block scores E_S + g as they fall out of the teacher's training (never
    trained on the target alone): a reference, not a distilled student.
    """
    return metrics_from_outputs(read_outputs(outputs_h5), ks, chunk_size, split, gallery_split,
                                gallery_chunk_size=gallery_chunk_size)


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates for a scatter plot; degenerate inputs pad with zeros."""
    n, d = embeddings.shape
    out = np.zeros((n, 2), dtype=np.float64)
    k = min(2, n, d)
    if k == 0 or n < 2:
        return out
    if method == "tsne" and n > 3:
        from sklearn.manifold import TSNE

        coords = TSNE(
            n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed
        ).fit_transform(embeddings.astype(np.float64))
        return np.asarray(coords, dtype=np.float64)
    if method not in ("pca", "tsne"):
        raise AmidError(f"unknown projection {method!r}; known: pca, tsne")
    from sklearn.decomposition import PCA

    out[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(
        embeddings.astype(np.float64)
    )
    return out


def plot_data(
    run: RunOutputs, split: str = "test", projection: str = "pca", max_points: int = 5000
) -> dict[str, pd.DataFrame]:
    """Tables for `dvc plots`: confusion (per sample), per-class accuracy, 2-D embedding.

    The student is plotted; a teacher-only run plots its teacher instead.
    """
    scored = run.split(split)
    model = scored.student if _nonempty(scored.student) else scored.teacher
    if not _nonempty(model):
        raise AmidError(f"{run.path}: /{split} has no outputs to plot")
    assert model is not None
    names = np.asarray(run.classes, dtype=object)
    pred = model.logits.argmax(axis=1)
    confusion = pd.DataFrame({
        "sample_id": model.ids, "actual": names[model.labels], "predicted": names[pred],
    })
    acc = per_class_accuracy(model.labels, pred)
    counts = np.bincount(model.labels, minlength=len(run.classes))
    matrix = confusion_matrix(model.labels, pred, n_classes=len(run.classes))
    per_class = pd.DataFrame({
        "class": run.classes,
        "accuracy": [acc.get(c, float("nan")) for c in range(len(run.classes))],
        "support": counts,
        "correct": np.diag(matrix),
    })
    # A fixed subsample keeps huge test sets plottable; seeded so reruns agree.
    keep = np.arange(len(model.ids))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(keep, max_points, replace=False))
    xy = project_2d(model.embeddings[keep], projection)
    embedding = pd.DataFrame({
        "sample_id": np.asarray(model.ids, dtype=object)[keep],
        "x": xy[:, 0], "y": xy[:, 1], "label": names[model.labels[keep]],
    })
    return {"confusion": confusion, "per_class": per_class, "embedding_2d": embedding}


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write a metrics (or summary) JSON atomically, so DVC never sees half a file."""
    path = Path(path)
    _atomic_text(path, json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    return path


def plots_dir_for(metrics_path: str | Path) -> Path:
    """Plot data of `metrics/<run>.json` lives in `metrics/<run>/`."""
    return Path(metrics_path).with_suffix("")


def write_plot_data(tables: dict[str, pd.DataFrame], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    written = []
    for name, table in tables.items():
        path = folder / f"{name}.csv"
        _atomic_text(path, table.to_csv(index=False))
        written.append(path)
    return written


def evaluate_run(
    outputs_h5: str | Path,
    out: str | Path,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 4096,
    split: str = "test",
    gallery_split: str = "train",
    projection: str = "pca",
    *,
    gallery_chunk_size: int = 8192,
) -> dict[str, Any]:
    """Score a run and write `out` (metrics JSON) plus its plot folder; returns the metrics."""
    run = read_outputs(outputs_h5)
    metrics = metrics_from_outputs(run, ks, chunk_size, split, gallery_split,
                                   gallery_chunk_size=gallery_chunk_size)
    write_plot_data(plot_data(run, split, projection), plots_dir_for(out))
    write_metrics(metrics, out)
    return metrics
