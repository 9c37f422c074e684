"""The report's Markdown: one table per dataset, methods as rows, metrics as columns.

Percentages, best per column in bold; the teacher-alone row (it sees every
modality) fills the accuracy columns with its own model and is a reference,
never bolded; metrics left out as trivially 100 % are named under the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amid.evaluate.evaluate import plots_dir_for


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


_HEADERS = {"top1": "Top-1", "top5": "Top-5", "wa": "WA", "ua": "UA"}


def omitted_note(rows: list[Row]) -> str:
    """One sentence naming the metrics left out as trivially 100 %, and for which rows."""
    where: dict[str, list[str]] = {}
    for row in rows:
        omitted = row.metrics.get("omitted")
        for key in omitted if isinstance(omitted, dict) else ():
            role, _, metric = key.partition(".")
            metric = metric.rsplit(".", 1)[-1]
            name = _HEADERS.get(metric, metric)
            name = f"Teacher {name}" if role == "teacher" and not _teacher_alone(row) else name
            if row.label not in where.setdefault(name, []):
                where[name].append(row.label)
    if not where:
        return ""
    listed = "; ".join(f"{name} ({', '.join(labels)})" for name, labels in where.items())
    return ("Left out as trivially 100 % (k at or above the number of classes or the "
            f"retrieval gallery size; `omitted` in the metrics files): {listed}.\n")


def markdown_report(tables: dict[str, list[Row]], others: dict[str, int] | None = None) -> str:
    """`results.md`: one table per dataset, each under its dataset's name.

    `others` counts the metrics files of datasets left out of the report.
    """
    parts = ["# Results\n"]
    if others:
        listed = ", ".join(f"{d} ({n} file{'s' if n > 1 else ''})" for d, n in others.items())
        parts.append(f"\nDataset {', '.join(tables)} only; metrics files of other datasets "
                     f"were left out: {listed}.\n")
    for dataset, rows in tables.items():
        parts.append(f"\n## {dataset}\n\n")
        parts.append(markdown_table(rows))
        note = omitted_note(rows)
        if note:
            parts.append(f"\n{note}")
    parts.append(
        "\nPercentages on the test split. Best per column in **bold** (the teacher-alone "
        "row, which sees every modality, is a reference and is not bolded). Gap = teacher "
        "Top-1 − student Top-1 (lower is better). R@K: test embeddings query the training "
        "embeddings by cosine similarity. Rows with n > 1 show mean ± std over folds or "
        "seeds.\n"
    )
    return "".join(parts)
