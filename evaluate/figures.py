"""Small PNG figures for the report (paper Figs. 3-5, confusion, embeddings).

Built on `matplotlib.figure.Figure`, never pyplot, so no global backend or
open-figure state is touched (safe in tests, servers and notebooks). Each
function returns the list of files it wrote: empty when the data it needs is
absent, because a report should draw what exists rather than fail.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import Colormap, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from amid.errors import OutputError
from amid.storage import replace_atomically

# dvclive names a metric `gap` or `val/gap` (plots/metrics/val/gap.tsv); these
# match the file stem, which is also the TSV's value column.
GAP_METRIC = re.compile(r"(^|_)gap($|_)")
COS_METRIC = re.compile(r"cos")
_DPI = 110


def save_png(fig: Figure, path: Path) -> list[Path]:
    """Render to memory, then replace `path` atomically (a failed write keeps the old PNG)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    data = buffer.getvalue()
    with replace_atomically(path, OutputError, reserve=len(data)) as tmp:
        tmp.write_bytes(data)
    return [path]


def read_history(tsv: Path) -> pd.DataFrame | None:
    """(step, value) of one dvclive TSV; None when unreadable or empty."""
    try:
        df = pd.read_csv(tsv, sep="\t")
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    values = [c for c in df.columns if c not in ("step", "timestamp")]
    if df.empty or not values:
        return None
    x = df["step"] if "step" in df.columns else pd.Series(range(len(df)))
    y = pd.to_numeric(df[values[-1]], errors="coerce")
    return pd.DataFrame({"step": x.to_numpy(), "value": y.to_numpy()}).dropna()


def find_history(run_dir: Path, pattern: re.Pattern[str]) -> Path | None:
    """The run's dvclive TSV whose metric name matches; validation logs preferred."""
    root = run_dir / "dvclive" / "plots" / "metrics"
    if not root.is_dir():
        return None
    hits = sorted(p for p in root.rglob("*.tsv") if pattern.search(p.stem))
    if not hits:
        return None
    preferred = [p for p in hits if "val" in p.relative_to(root).parts[:-1]]
    return (preferred or hits)[0]


def history_figure(table: pd.DataFrame, column: str, out: Path, ylabel: str) -> list[Path]:
    """One line per method of `history_table` that logged `column`: the mean over its
    seeds' runs (`label` column, else `method`), with their range shaded when there
    are several."""
    rows = table.dropna(subset=[column])
    if rows.empty:
        return []
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    by = next(c for c in ("label", "method", "run") if c in rows.columns)
    for name, part in rows.groupby(by, sort=True):
        stats = part.groupby("epoch")[column].agg(["mean", "min", "max", "count"])
        (line,) = ax.plot(stats.index, stats["mean"], linewidth=1.5,
                          label=f"{name} ({part['run'].nunique()} seeds)"
                          if part["run"].nunique() > 1 else str(name))
        if part["run"].nunique() > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.15,
                            color=line.get_color(), linewidth=0)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, out)


GRAD_METRIC = re.compile(r"^grad_")
ACCURACY_METRIC = re.compile(r"^(train|val)_acc_(student|teacher)$")


def _histories(runs: Sequence[Path], pattern: re.Pattern[str]) -> dict[str, pd.DataFrame]:
    """metric -> (epoch, value) averaged over `runs`, for every dvclive TSV that matches."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for run in runs:
        root = run / "dvclive" / "plots" / "metrics"
        for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
            hist = read_history(tsv) if pattern.search(tsv.stem) else None
            if hist is not None and not hist.empty:
                frames.setdefault(tsv.stem, []).append(hist)
    return {name: pd.concat(parts).groupby("step", sort=True)["value"].mean()
            for name, parts in sorted(frames.items())}


def diagnostics_figure(runs: Sequence[Path], out: Path, title: str, *,
                       student: bool = True) -> list[Path]:
    """What a run's diagnostics say (mean over the seeds' runs given): left, the gradient
    norm each weighted loss term sends into the student encoder per epoch (which term
    drives the student); right, train and validation accuracy of student and teacher
    (memorising, or learning). Nothing is drawn when the runs logged neither.
    `student=False` (the `teacher` method, whose student is an untrained by-product)
    leaves the student's accuracy out."""
    grads = _histories(runs, GRAD_METRIC)
    accuracy = {name: series for name, series in _histories(runs, ACCURACY_METRIC).items()
                if student or not name.endswith("student")}
    if not grads and not accuracy:
        return []
    fig = Figure(figsize=(9, 3.3))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, series in grads.items():
        positive = series[series > 0]  # a term that does not reach the student logs 0
        if not positive.empty:
            left.plot(positive.index + 1, positive.to_numpy(), label=name.removeprefix("grad_"),
                      linewidth=1.4)
    left.set_yscale("log")
    left.set_ylabel("grad norm into the student encoder")
    for name, series in accuracy.items():
        right.plot(series.index + 1, 100 * series.to_numpy(), label=name.replace("_acc_", " "),
                   color="C0" if name.endswith("student") else "C1",
                   linestyle="--" if name.startswith("train") else "-", linewidth=1.4)
    right.set_ylabel("accuracy (%)")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    seeds = f", mean of {len(runs)} seeds" if len(runs) > 1 else ""
    fig.suptitle(f"{title}{seeds}", fontsize=9)
    return save_png(fig, out)


def history_table(runs: Path | Sequence[Path], columns: dict[str, re.Pattern[str]]
                  ) -> pd.DataFrame:
    """Long table (epoch, run, one column per metric) of every run that logged any of them.

    `runs` is a folder of run folders, or the run folders themselves. The data
    of `history_figure` and of dvc.yaml's top-level plots (one line per run,
    `configs/plots/by_run.json`), whatever methods were trained; epochs count
    from 1.
    """
    if isinstance(runs, Path):
        runs = sorted(p for p in runs.iterdir() if p.is_dir())
    frames = []
    for run in runs:
        merged: pd.DataFrame | None = None
        for name, pattern in columns.items():
            tsv = find_history(run, pattern)
            hist = read_history(tsv) if tsv else None
            if hist is None or hist.empty:
                continue
            hist = hist.rename(columns={"value": name})
            merged = hist if merged is None else merged.merge(hist, on="step", how="outer")
        if merged is not None:
            frames.append(merged.assign(run=run.name))
    if not frames:
        return pd.DataFrame(columns=["epoch", "run", *columns])
    table = pd.concat(frames, ignore_index=True)
    table["epoch"] = table.pop("step").astype(int) + 1
    return table.reindex(columns=["epoch", "run", *columns])


def _read_tables(dirs: Sequence[Path], name: str) -> list[pd.DataFrame]:
    return [pd.read_csv(d / f"{name}.csv") for d in dirs if (d / f"{name}.csv").is_file()]


def per_class_figure(methods: Sequence[tuple[str, Sequence[Path]]], out: Path) -> list[Path]:
    """Per-class accuracy of two (or more) methods side by side (paper Fig. 3).

    Folds of one method are averaged per class.
    """
    series = {}
    for label, dirs in methods:
        tables = _read_tables(dirs, "per_class")
        if tables:
            series[label] = pd.concat(tables).groupby("class", sort=False)["accuracy"].mean()
    if len(series) < 2:
        return []
    classes = list(next(iter(series.values())).index)
    n = len(classes)
    width = 0.8 / len(series)
    fig = Figure(figsize=(min(3 + 0.3 * n, 16), 3.4))
    ax = fig.add_subplot()
    x = np.arange(n)
    for k, (label, acc) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, 100 * acc.reindex(classes).to_numpy(),
               width, label=label)
    ax.set_xticks(x, classes, rotation=90 if n > 8 else 0, fontsize=7 if n > 20 else 8)
    ax.set_ylabel("Top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return save_png(fig, out)


def confusion_figure(dirs: Sequence[Path], out: Path, title: str) -> list[Path]:
    """Row-normalised confusion matrix, summed over the runs (folds) given."""
    tables = _read_tables(dirs, "confusion")
    per_class = _read_tables(dirs, "per_class")
    if not tables:
        return []
    df = pd.concat(tables)
    classes = list(per_class[0]["class"]) if per_class else sorted(
        set(df["actual"]) | set(df["predicted"])
    )
    index = {c: i for i, c in enumerate(classes)}
    n = len(classes)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (df["actual"].map(index), df["predicted"].map(index)), 1)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    side = min(2.5 + 0.25 * n, 10)
    fig = Figure(figsize=(side + 0.8, side))
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 10:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=9)
    return save_png(fig, out)


def _class_colours(n: int) -> Colormap:
    """Distinct qualitative colours for up to 20 classes, a continuous map beyond."""
    if n > 20:
        return colormaps["turbo"].resampled(n)
    base = colormaps["tab10" if n <= 10 else "tab20"]
    return ListedColormap(base(np.arange(n)))


def embedding_figure(folder: Path, out: Path, title: str) -> list[Path]:
    """2-D projection of the test embeddings, one colour per class."""
    path = folder / "embedding_2d.csv"
    if not path.is_file():
        return []
    df = pd.read_csv(path)
    if df.empty:
        return []
    labels = sorted(df["label"].astype(str).unique())
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    codes = df["label"].astype(str).map({c: i for i, c in enumerate(labels)})
    points = ax.scatter(df["x"], df["y"], c=codes, cmap=_class_colours(len(labels)), s=8,
                        alpha=0.8, vmin=-0.5, vmax=len(labels) - 0.5)
    if len(labels) <= 12:
        handles = points.legend_elements(num=list(range(len(labels))))[0]
        ax.legend(handles, labels, fontsize=6, loc="best", markerscale=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return save_png(fig, out)
