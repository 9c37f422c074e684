"""Paper-style results: Markdown tables (methods x metrics) and figures.

Rows come from whatever metrics files exist. Files of one method that differ
only by fold or seed become one row (mean ± std, via `summarize`); a summary
file stands for the per-fold files of its method. When two kinds of files
share a method (an ablation such as `amid_ccl` trained as method `amid`), the
rows are told apart by file name, with any `_fold<k>`/`_seed<k>` suffix removed.
"""

from __future__ import annotations

import glob
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amid.errors import AmidError
from amid.evaluate import figures
from amid.evaluate.evaluate import plots_dir_for
from amid.evaluate.summary import is_summary, read_metrics, summarize

METHOD_ORDER = ("baseline", "teacher", "ts", "ts_ta", "amid")
_SUFFIX = re.compile(r"(?:(?:^|[_.-])(?:fold|seed)[_-]?\d+|[_.-][fs]\d+)+$", re.IGNORECASE)


@dataclass
class Row:
    """One table row: a method (or variant) on one dataset."""

    label: str
    method: str
    dataset: str
    metrics: dict[str, Any]  # metrics layout; means when several runs
    std: dict[str, Any] | None = None
    n: int = 1
    files: list[Path] = field(default_factory=list)  # per-run files (their plot folders)

    @property
    def plot_dirs(self) -> list[Path]:
        return [d for d in map(plots_dir_for, self.files) if d.is_dir()]


def find_metrics(patterns: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Files matching the globs: (metrics files, other JSON files that were skipped).

    A glob such as `metrics/**/*.json` can catch unrelated JSON (dvclive's
    `metrics.json`); those are set aside, while a broken metrics file still errors.
    """
    found: list[Path] = []
    skipped: list[Path] = []
    for pattern in patterns:
        for name in sorted(glob.glob(pattern, recursive=True)):
            path = Path(name)
            if path in found or path in skipped or not path.is_file():
                continue
            try:
                read_metrics(path)
            except AmidError as exc:
                if "not a metrics file" not in str(exc):
                    raise
                skipped.append(path)
                continue
            found.append(path)
    return found, skipped


def variant_name(path: Path) -> str:
    stem = _SUFFIX.sub("", path.stem)
    return stem or path.parent.name


def _order(row: Row) -> tuple[int, str, str]:
    rank = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    return rank, row.method if rank == len(METHOD_ORDER) else "", row.label


def collect_rows(paths: Sequence[str | Path]) -> dict[str, list[Row]]:
    """Group metrics files into rows, per dataset, in the paper's row order."""
    loaded = [(Path(p), read_metrics(p)) for p in paths]
    by_method: dict[tuple[str, str], list[tuple[Path, dict[str, Any]]]] = {}
    for path, data in loaded:
        key = (str(data.get("dataset")), str(data.get("method")))
        by_method.setdefault(key, []).append((path, data))
    tables: dict[str, list[Row]] = {}
    for (dataset, method), items in by_method.items():
        variants = {variant_name(p) for p, _ in items}
        groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        for path, data in items:
            label = variant_name(path) if len(variants) > 1 else method
            groups.setdefault(label, []).append((path, data))
        for label, group in groups.items():
            tables.setdefault(dataset, []).append(_row(label, method, dataset, group))
    for rows in tables.values():
        rows.sort(key=_order)
    return dict(sorted(tables.items()))


def _row(label: str, method: str, dataset: str, group: list[tuple[Path, dict[str, Any]]]) -> Row:
    runs = [(p, d) for p, d in group if not is_summary(d)]
    summaries = [(p, d) for p, d in group if is_summary(d)]
    if summaries:
        data = summaries[0][1]
        files = [Path(f) for f in data.get("files", [])] or [p for p, _ in runs]
        return Row(label, method, dataset, data, data["std"], int(data["n"]), files)
    if len(runs) == 1:
        return Row(label, method, dataset, runs[0][1], None, 1, [runs[0][0]])
    summary = summarize([p for p, _ in runs])
    return Row(label, method, dataset, summary, summary["std"], len(runs), [p for p, _ in runs])


# ------------------------------------------------------------------ tables


def _get(tree: dict[str, Any] | None, *keys: str) -> float | None:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def _columns(rows: list[Row]) -> list[tuple[str, tuple[str, ...], bool]]:
    """(header, path in the metrics tree, higher is better), only those some row has."""
    ks: set[int] = set()
    for row in rows:
        for name in (row.metrics.get("student") or {}).get("retrieval", {}):
            if name.startswith("R@") and name[2:].isdigit():
                ks.add(int(name[2:]))
    cols = [
        ("Top-1", ("student", "top1"), True), ("Top-5", ("student", "top5"), True),
        ("WA", ("student", "wa"), True), ("UA", ("student", "ua"), True),
        *[(f"R@{k}", ("student", "retrieval", f"R@{k}"), True) for k in sorted(ks)],
        ("Teacher Top-1", ("teacher", "top1"), True),
        ("Gap", ("gap",), False),
    ]
    return [c for c in cols if any(_cell(r, c[1]) is not None for r in rows)]


def _cell(row: Row, path: tuple[str, ...]) -> float | None:
    if path == ("gap",):
        if _teacher_alone(row):
            return None
        t, s = _get(row.metrics, "teacher", "top1"), _get(row.metrics, "student", "top1")
        return None if t is None or s is None else t - s
    if path[0] == "student" and _teacher_alone(row):
        # A teacher-alone run: its own model fills the accuracy columns.
        return _get(row.metrics, "teacher", *path[1:])
    return _get(row.metrics, *path)


def _teacher_alone(row: Row) -> bool:
    """The `teacher` method (its student path is a by-product) or a run with no student."""
    return "teacher" in row.metrics and (row.method == "teacher" or "student" not in row.metrics)


def _std(row: Row, path: tuple[str, ...]) -> float | None:
    if row.std is None or path == ("gap",):
        return None
    if path[0] == "student" and _teacher_alone(row):
        return _get(row.std, "teacher", *path[1:])
    return _get(row.std, *path)


def _competes(row: Row, path: tuple[str, ...]) -> bool:
    # The teacher-alone row uses every modality: an upper reference, not a rival student.
    return not (path[0] == "student" and _teacher_alone(row))


def markdown_table(rows: list[Row]) -> str:
    """Methods as rows, metrics as columns, percentages; best per column in bold."""
    cols = _columns(rows)
    shown = {
        (i, j): None if (v := _cell(r, c[1])) is None else round(100 * v, 1)
        for i, r in enumerate(rows) for j, c in enumerate(cols)
    }
    best = {}
    for j, (_, path, higher) in enumerate(cols):
        vals = [shown[i, j] for i, r in enumerate(rows)
                if shown[i, j] is not None and _competes(r, path)]
        if vals:
            best[j] = max(vals) if higher else min(vals)
    lines = [
        "| Method | " + " | ".join(c[0] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for i, row in enumerate(rows):
        cells = []
        for j, (_, path, _) in enumerate(cols):
            value = shown[i, j]
            if value is None:
                cells.append("–")
                continue
            text = f"{value:.1f}"
            spread = _std(row, path)
            if spread is not None and row.n > 1 and not math.isnan(spread):
                text += f" ± {100 * spread:.1f}"
            if best.get(j) == value and _competes(row, path):
                text = f"**{text}**"
            cells.append(text)
        name = row.label + (f" (n={row.n})" if row.n > 1 else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(tables: dict[str, list[Row]]) -> str:
    parts = ["# Results\n"]
    for dataset, rows in tables.items():
        parts.append(f"\n## {dataset}\n\n")
        parts.append(markdown_table(rows))
    parts.append(
        "\nPercentages on the test split. Best per column in **bold** (the teacher-alone "
        "row, which sees every modality, is a reference and is not bolded). Gap = teacher "
        "Top-1 − student Top-1 (lower is better). R@K: test embeddings query the training "
        "embeddings by cosine similarity. Rows with n > 1 show mean ± std over folds or "
        "seeds.\n"
    )
    return "".join(parts)


# ------------------------------------------------------------------ report


def _pick_pair(rows: list[Row], compare: Sequence[str]) -> list[Row]:
    with_data = [r for r in rows if r.plot_dirs]
    chosen = [r for name in compare for r in with_data if r.label == name]
    for row in with_data:
        if len(chosen) >= 2:
            break
        if row not in chosen:
            chosen.append(row)
    return chosen[:2]


def write_report(
    metrics_files: Sequence[str | Path],
    out_dir: str | Path,
    runs_dir: str | Path | None = None,
    compare: Sequence[str] = ("amid", "baseline"),
) -> list[Path]:
    """Write `results.md` and the figures into `out_dir`; returns the files written."""
    if not metrics_files:
        raise AmidError("no metrics files matched; run `amid-evaluate run` first")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = collect_rows(metrics_files)
    written = [out / "results.md"]
    written[0].write_text(markdown_report(tables), encoding="utf-8")
    multi = len(tables) > 1
    for dataset, rows in tables.items():
        prefix = f"{dataset}_" if multi else ""
        pair = _pick_pair(rows, compare)
        if len(pair) == 2:
            written += figures.per_class_figure(
                [(r.label, r.plot_dirs) for r in pair], out / f"{prefix}per_class.png"
            )
        for row in rows:
            if row.plot_dirs:
                written += figures.confusion_figure(
                    row.plot_dirs, out / f"{prefix}confusion_{row.label}.png", row.label
                )
                written += figures.embedding_figure(
                    row.plot_dirs[0], out / f"{prefix}embedding_{row.label}.png", row.label
                )
    if runs_dir is not None and Path(runs_dir).is_dir():
        curves = figures.history_table(Path(runs_dir), {"acc_gap": figures.GAP_METRIC,
                                                        "cos_same_class": figures.COS_METRIC})
        written += figures.history_figure(curves, "acc_gap", out / "gap_over_epochs.png",
                                          "teacher − student accuracy")
        written += figures.history_figure(curves, "cos_same_class", out / "cos_same_class.png",
                                          "same-class teacher-student cosine")
        if not curves.empty:  # the data of dvc.yaml's top-level plots
            curves.to_csv(out / "curves.csv", index=False)
            written.append(out / "curves.csv")
    return written
