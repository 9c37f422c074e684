"""One run's metrics (docs/outputs.md) and the DVC plot data next to them.

`evaluate_outputs` turns `outputs.h5` into the metrics JSON; `write_plot_data`
writes the per-sample and per-class tables that `dvc plots` and the report
draw (confusion, per-class accuracy, a 2-D projection of the embeddings).
The test split is scored; the training split is only the retrieval gallery,
so nothing here selects a model on test data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from amid.errors import AmidError, OutputError
from amid.evaluate.history import run_history
from amid.evaluate.labels import RunIdentity, read_identity
from amid.evaluate.metrics import (
    confusion_matrix,
    per_class_accuracy,
    recall_at_k,
    top_k_accuracy,
    unweighted_accuracy,
    weighted_accuracy,
)
from amid.evaluate.outputs import ModelOutputs, RunOutputs, read_outputs
from amid.storage import write_json, write_text

DEFAULT_KS = (1, 5, 10, 20, 50)
TOP_K = 5  # the Top-k accuracy reported beside Top-1
RUN_FILES = ("outputs.h5", "student.json", "config.json")  # what marks a run folder


def classification_metrics(outputs: ModelOutputs, n_classes: int | None = None
                           ) -> dict[str, float]:
    """Top-1, Top-5, WA (plain accuracy) and UA (mean per-class recall).

    Top-5 is left out when there are 5 classes or fewer: every true class is
    then among the top 5 and the figure would be a meaningless 100 %
    (`omitted_top_k` says so in the metrics file).
    """
    pred = outputs.logits.argmax(axis=1)
    n_classes = outputs.logits.shape[1] if n_classes is None else n_classes
    result = {"top1": top_k_accuracy(outputs.labels, outputs.logits, 1)}
    if n_classes > TOP_K:
        result["top5"] = top_k_accuracy(outputs.labels, outputs.logits, TOP_K)
    result["wa"] = weighted_accuracy(outputs.labels, pred)
    result["ua"] = unweighted_accuracy(outputs.labels, pred)
    return result


def omitted_top_k(role: str, n_classes: int) -> dict[str, str]:
    if n_classes > TOP_K:
        return {}
    return {f"{role}.top{TOP_K}": f"k = {TOP_K} >= {n_classes} classes: trivially 100 %"}


def _nonempty(model: ModelOutputs | None) -> bool:
    return model is not None and len(model.ids) > 0


def self_exclusions(query_ids: Sequence[str], gallery_ids: Sequence[str]) -> np.ndarray | None:
    """Per query, the gallery index of the same sample (-1: none); None when no overlap.

    With `split == gallery_split` every query is in the gallery and would find
    itself at rank 1 (R@K = 100 %); each query is left out of its own gallery
    instead (leave-one-out retrieval).
    """
    where = {sid: k for k, sid in enumerate(gallery_ids)}
    exclude = np.fromiter((where.get(sid, -1) for sid in query_ids), dtype=np.int64,
                          count=len(query_ids))
    return exclude if (exclude >= 0).any() else None


def retrieval_metrics(query: ModelOutputs, gallery: ModelOutputs, ks: Sequence[int],
                      chunk_size: int, gallery_chunk_size: int
                      ) -> tuple[dict[str, float], dict[str, str]]:
    """R@K of `query` against `gallery` (a query never retrieves itself), and the ks left out.

    K at or above the gallery size ranks the whole gallery: R@K is then just
    the share of queries whose class the gallery holds (100 % when it holds
    all of them), so those ks are omitted and named in the second dict.
    """
    exclude = self_exclusions(query.ids, gallery.ids)
    size = len(gallery.ids) - (1 if exclude is not None else 0)
    kept = sorted({int(k) for k in ks if int(k) < size})
    omitted = {f"student.retrieval.R@{k}": f"k = {k} >= gallery size {size}: trivially "
               "100 %" for k in sorted({int(k) for k in ks}) if k >= size}
    if not kept:
        return {}, omitted
    recall = recall_at_k(query.embeddings, query.labels, gallery.embeddings, gallery.labels,
                         ks=kept, chunk_size=chunk_size, gallery_chunk_size=gallery_chunk_size,
                         exclude=exclude)
    return recall, omitted


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
    n_classes = len(run.classes)
    identity = read_identity(Path(run.path).parent, run.method)
    result: dict[str, Any] = {
        "method": identity.method if identity else run.method, "dataset": run.dataset,
        "fold": run.fold, "seed": run.seed,
    }
    if identity is not None:  # a run folder of amid-train: which run, labelled how
        result |= run_fields(identity)
    if run.training_set:  # a subsampled training split says so (dataset.train_per_class)
        result["training_set"] = run.training_set
    omitted: dict[str, str] = {}
    if _scores_student(result["method"]) and _nonempty(scored.student):
        assert scored.student is not None
        student: dict[str, Any] = classification_metrics(scored.student, n_classes)
        omitted |= omitted_top_k("student", n_classes)
        gallery = run.split(gallery_split).student
        if not _nonempty(gallery):
            raise AmidError(
                f"{run.path}: /{gallery_split}/student is missing or empty; retrieval needs "
                f"the {gallery_split} embeddings as its gallery"
            )
        assert gallery is not None
        recall, skipped = retrieval_metrics(scored.student, gallery, ks, chunk_size,
                                            gallery_chunk_size)
        if recall:
            student["retrieval"] = recall
        omitted |= skipped
        result["student"] = student
    if _nonempty(scored.teacher):
        assert scored.teacher is not None
        result["teacher"] = classification_metrics(scored.teacher, n_classes)
        omitted |= omitted_top_k("teacher", n_classes)
    if "student" not in result and "teacher" not in result:
        raise AmidError(f"{run.path}: /{split} has no student or teacher outputs to score")
    if omitted:
        result["omitted"] = omitted
    return result


def run_fields(identity: RunIdentity) -> dict[str, Any]:
    """The metrics file's run fields: `run` (its name under `methods`: `amid_ccl`),
    `preset` (ts/ts_ta/amid), `label` (what tables and figures call it: `amid
    (recommended)`) and `auxiliary` (the modalities its teacher adds; IEMOCAP's setup)."""
    fields: dict[str, Any] = {"run": identity.run}
    if identity.preset is not None:
        fields["preset"] = identity.preset
    fields["label"] = identity.label
    if identity.auxiliary is not None:
        fields["auxiliary"] = list(identity.auxiliary)
    return fields


def _scores_student(method: str) -> bool:
    # The `teacher` method trains the full-modality teacher alone; its student
    # path (E_S + g) is a by-product never trained on the target alone, so its
    # figures would read as an untrained student in `dvc metrics show`.
    return method != "teacher"


def registered_method(run: RunOutputs) -> str:
    """The method the run trained: config.json's record of it, else outputs.h5's."""
    identity = read_identity(Path(run.path).parent, run.method)
    return identity.method if identity else run.method


def evaluate_outputs(
    outputs_h5: str | Path,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 4096,
    split: str = "test",
    gallery_split: str = "train",
    *,
    gallery_chunk_size: int = 8192,
) -> dict[str, Any]:
    """Score `outputs.h5`: the metrics dict of docs/outputs.md, fractions in [0, 1].

    `student` holds top1/top5/wa/ua and `retrieval` (R@K: `split` embeddings
    query the `gallery_split` embeddings by cosine similarity, a query never
    retrieving itself); `teacher` is present only for methods that train one,
    and the `teacher` method has no `student` block. Metrics that are 100 % by
    construction (Top-5 with 5 classes or fewer, R@K with K at or above the
    gallery size) are left out and listed with the reason in `omitted`.
    """
    return metrics_from_outputs(read_outputs(outputs_h5), ks, chunk_size, split, gallery_split,
                                gallery_chunk_size=gallery_chunk_size)


def project_2d(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates for a scatter plot; degenerate inputs pad with zeros.

    Identical points (all-zero embeddings of a collapsed student, say) are
    all placed at the origin: PCA would divide by their zero variance and leak
    a RuntimeWarning.
    """
    n, d = embeddings.shape
    out = np.zeros((n, 2), dtype=np.float64)
    k = min(2, n, d)
    if method not in ("pca", "tsne"):
        raise AmidError(f"unknown projection {method!r}; known: pca, tsne")
    x = embeddings.astype(np.float64)
    if k == 0 or n < 2 or not np.ptp(x, axis=0).any():
        return out
    if method == "tsne" and n > 3:
        from sklearn.manifold import TSNE

        coords = TSNE(
            n_components=2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed
        ).fit_transform(x)
        return np.asarray(coords, dtype=np.float64)
    out[:, :k] = pca(x, k)
    return out


def pca(x: np.ndarray, k: int) -> np.ndarray:
    """The first `k` principal-component scores of `x` (n, d), as scikit-learn's PCA gives
    them, sign convention included (each component's largest |loading| positive), by one
    numpy SVD: importing sklearn.decomposition cost each `amid-evaluate` 1.8 s."""
    centred = x - x.mean(axis=0)  # (n, d)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # (min(n, d), d)
    comps = vt[:k]  # (k, d)
    comps = comps * np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])[:, None]
    return centred @ comps.T  # (n, k)


def plot_data(
    run: RunOutputs, split: str = "test", projection: str = "pca", max_points: int = 5000
) -> dict[str, pd.DataFrame]:
    """Tables for `dvc plots`: confusion (per sample), per-class accuracy, 2-D embedding
    (with its class label), and the run folder's dvclive history (`history.run_history`).

    The student is plotted; a teacher-only run (and the `teacher` method) plots
    its teacher instead.
    """
    scored = run.split(split)
    student = scored.student if _scores_student(registered_method(run)) else None
    model = student if _nonempty(student) else scored.teacher
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
    return {"confusion": confusion, "per_class": per_class, "embedding_2d": embedding,
            "history": run_history(Path(run.path).parent)}


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write a metrics (or summary) JSON atomically; NaN is refused, never written."""
    return write_json(path, metrics)


def plots_dir_for(metrics_path: str | Path) -> Path:
    """Plot data of `metrics/<run>.json` lives in `metrics/<run>/`."""
    return Path(metrics_path).with_suffix("")


def check_metrics_path(out: str | Path) -> Path:
    """Refuse an output path whose metrics file or plot folder would land somewhere wrong.

    `--out runs/base` (the run folder) would otherwise write the plot CSVs into
    the run folder itself; a metrics file must be a `.json` path, and its plot
    folder (the same path without `.json`) must not be a run folder.
    """
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give the metrics file to write "
                          "(a .json path, e.g. metrics/<run>.json)")
    if out.suffix != ".json":
        raise OutputError(f"--out {out}: a metrics file must end in .json (its plot data goes "
                          "into the folder of the same name)")
    plots = plots_dir_for(out)
    if plots.exists() and not plots.is_dir():
        raise OutputError(f"--out {out}: its plot folder {plots} is a file")
    if plots.is_dir() and any((plots / name).exists() for name in RUN_FILES):
        raise OutputError(f"--out {out}: its plot folder {plots} is a run folder of "
                          "amid-train; write the metrics elsewhere (e.g. metrics/)")
    return out


def write_plot_data(tables: dict[str, pd.DataFrame], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return [write_text(folder / f"{name}.csv", table.to_csv(index=False))
            for name, table in tables.items()]


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
    """Score a run and write `out` (metrics JSON) plus its plot folder; returns the metrics.

    Everything is computed before the first write, and each file is replaced
    atomically: a failure leaves the previous files as they were.
    """
    out = check_metrics_path(out)
    run = read_outputs(outputs_h5)
    metrics = metrics_from_outputs(run, ks, chunk_size, split, gallery_split,
                                   gallery_chunk_size=gallery_chunk_size)
    tables = plot_data(run, split, projection)
    write_plot_data(tables, plots_dir_for(out))
    write_metrics(metrics, out)
    return metrics
