"""The report's Markdown: one table per dataset, methods as rows, metrics as columns.

Percentages, best per column in bold; the teacher-alone row (it sees every
modality) fills the accuracy columns with its own model and is a reference in
every column, never bolded; a negative teacher-student gap (a teacher below its
student) is not a closed gap and is never bolded either. For the datasets the
paper reports, a `Paper <metric>` column beside ours gives the published number
of the same configuration (evaluate/paper.py), and a second table sets the
ablation ladder of the paper's Tables 4 and 5 beside ours when those runs are
present. Metrics left out as trivially 100 % are named under the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amid.evaluate import paper
from amid.evaluate.evaluate import plots_dir_for
from amid.evaluate.labels import PAPER_PRESET


@dataclass
class Row:
    """One table row: a run (a method or a variant of one) on one dataset."""

    label: str  # what the table shows: `amid`, `amid_ccl`, `amid (recommended)`
    method: str  # the registered method
    dataset: str
    metrics: dict[str, Any]  # metrics layout; means when several runs
    std: dict[str, Any] | None = None
    n: int = 1
    files: list[Path] = field(default_factory=list)  # per-run files (their plot folders)
    run: str = ""  # the run's name under `methods` (the paper's row); the label by default
    preset: str | None = None  # ts / ts_ta / amid: paper or recommended

    def __post_init__(self) -> None:
        self.run = self.run or self.label

    @property
    def plot_dirs(self) -> list[Path]:
        return [d for d in map(plots_dir_for, self.files) if d.is_dir()]

    @property
    def setup(self) -> str | None:
        """IEMOCAP's Table 3 setup of this run (from the auxiliary modalities it recorded)."""
        auxiliary = self.metrics.get("auxiliary")
        return paper.setup_of(auxiliary) if isinstance(auxiliary, list) else None


@dataclass(frozen=True)
class Column:
    header: str
    path: tuple[str, ...]  # in the metrics tree; ("gap",) for teacher - student Top-1
    higher: bool = True  # higher is better
    published: bool = False  # the paper's number, beside ours: a reference, never bolded


def _get(tree: dict[str, Any] | None, *keys: str) -> float | None:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def _columns(rows: list[Row]) -> list[Column]:
    """Our columns that some row has, each followed by the paper's where it has numbers."""
    ks: set[int] = set()
    for row in rows:
        for name in (row.metrics.get("student") or {}).get("retrieval", {}):
            if name.startswith("R@") and name[2:].isdigit():
                ks.add(int(name[2:]))
    ours = [
        Column("Top-1", ("student", "top1")), Column("Top-5", ("student", "top5")),
        Column("WA", ("student", "wa")), Column("UA", ("student", "ua")),
        *[Column(f"R@{k}", ("student", "retrieval", f"R@{k}")) for k in sorted(ks)],
        Column("Teacher Top-1", ("teacher", "top1")),
        Column("Gap", ("gap",), higher=False),
    ]
    cols = []
    for col in ours:
        if any(_cell(r, col.path) is not None for r in rows):
            cols.append(col)
            if any(paper_value(r, col.path) is not None for r in rows):
                cols.append(Column(f"Paper {col.header}", col.path, published=True))
    return cols


def _cell(row: Row, path: tuple[str, ...]) -> float | None:
    if path == ("gap",):
        if _teacher_alone(row):
            return None
        t, s = _get(row.metrics, "teacher", "top1"), _get(row.metrics, "student", "top1")
        return None if t is None or s is None else t - s
    return _get(row.metrics, *_source(row, path))


def _source(row: Row, path: tuple[str, ...]) -> tuple[str, ...]:
    # A teacher-alone run: its own model fills the accuracy columns.
    return ("teacher", *path[1:]) if path[0] == "student" and _teacher_alone(row) else path


def _teacher_alone(row: Row) -> bool:
    """The `teacher` method (its student path is a by-product) or a run with no student."""
    return "teacher" in row.metrics and (row.method == "teacher" or "student" not in row.metrics)


def paper_value(row: Row, path: tuple[str, ...]) -> float | None:
    """The paper's number (percent) for the cell of `row` under our column `path`.

    The run's name picks the paper's row (`amid_ccl` -> "AMID with L_CCL"); a run
    at a preset other than the paper's is not the paper's configuration and gets
    none. IEMOCAP's number is that of the run's setup (its auxiliary modalities).
    """
    if path == ("gap",) or row.preset not in (None, PAPER_PRESET):
        return None
    entry = paper.published(row.dataset, row.run, ".".join(_source(row, path)), row.setup)
    return None if entry is None else entry.value


def _std(row: Row, path: tuple[str, ...]) -> float | None:
    if row.std is None or path == ("gap",):
        return None
    return _get(row.std, *_source(row, path))


def _competes(row: Row, col: Column, value: float) -> bool:
    """Whether a cell may be bolded as the column's best."""
    if col.published or _teacher_alone(row):
        # The teacher-alone row uses every modality: an upper reference, not a rival
        # student, in every column (its Teacher Top-1 is its own Top-1 again).
        return False
    # A negative gap is a teacher below its student: not a gap closed, never the best.
    return not (col.path == ("gap",) and value < 0)


def _format(value: float, spread: float | None, n: int) -> str:
    text = f"{value:.1f}"
    if spread is not None and n > 1 and not math.isnan(spread):
        text += f" ± {100 * spread:.1f}"
    return text


def _name(row: Row) -> str:
    return row.label + (f" (n={row.n})" if row.n > 1 else "")


def markdown_table(rows: list[Row]) -> str:
    """Methods as rows, metrics as columns, percentages; best per column in bold."""
    cols = _columns(rows)
    shown: dict[tuple[int, int], float | None] = {}
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            value = paper_value(row, col.path) if col.published else _cell(row, col.path)
            # + 0.0: a gap that rounds to zero from below shows as 0.0, not -0.0
            shown[i, j] = None if value is None else \
                value if col.published else round(100 * value, 1) + 0.0
    best = {}
    for j, col in enumerate(cols):
        vals = [v for i, r in enumerate(rows)
                if (v := shown[i, j]) is not None and _competes(r, col, v)]
        if vals:
            best[j] = max(vals) if col.higher else min(vals)
    lines = [
        "| Method | " + " | ".join(c.header for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for i, row in enumerate(rows):
        cells = []
        for j, col in enumerate(cols):
            value = shown[i, j]
            if value is None:
                cells.append("–")
                continue
            text = _format(value, None if col.published else _std(row, col.path), row.n)
            if best.get(j) == value and _competes(row, col, value):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {_name(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ladder_table(rows: list[Row]) -> str:
    """The ablation ladder of the paper's Tables 4 and 5, ours beside the paper's.

    Printed for a dataset the paper reports, when at least one rung between the
    baseline and AMID was run (`ts`, `ts_ta`, `amid_ccl`, `amid_fixed_teacher`, ...);
    rows in the paper's order, student and teacher Top-1 each beside the paper's.
    Empty otherwise.
    """
    if not rows or rows[0].dataset not in paper.PAPER_DATASETS:
        return ""
    by_run: dict[str, list[Row]] = {}
    for row in rows:
        by_run.setdefault(row.run, []).append(row)
    if not paper.LADDER_RUNGS & by_run.keys():
        return ""
    header = ["Configuration (paper)", "Run", "Top-1", "Paper Top-1", "Teacher Top-1",
              "Paper Teacher Top-1"]
    body = []
    for run, configuration in paper.LADDER:
        for row in by_run.get(run, []):
            cells = [configuration, _name(row)]
            for role in ("student", "teacher"):
                # the teacher method's student is a by-product: the paper prints "\" there
                ours = None if role == "student" and _teacher_alone(row) else \
                    _get(row.metrics, role, "top1")
                spread = _get(row.std, role, "top1") if row.std is not None else None
                cells.append("–" if ours is None else _format(100 * ours, spread, row.n))
                published = None if row.preset not in (None, PAPER_PRESET) else \
                    paper.published(row.dataset, row.run, f"{role}.top1", row.setup)
                cells.append("–" if published is None else f"{published.value:.1f}")
            body.append(cells)
    # the paper's ablations are on UCF51: elsewhere its columns would be empty
    keep = [j for j, name in enumerate(header)
            if not name.startswith("Paper") or any(cells[j] != "–" for cells in body)]
    lines = ["| " + " | ".join(header[j] for j in keep) + " |",
             "|---|---|" + "---:|" * (len(keep) - 2)]
    lines += ["| " + " | ".join(cells[j] for j in keep) + " |" for cells in body]
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


def paper_note(rows: list[Row]) -> str:
    """Where the `Paper` columns come from, for a dataset the paper reports; else ''."""
    if not rows or rows[0].dataset not in paper.PAPER_DATASETS:
        return ""
    dataset = rows[0].dataset
    parts = [f"Paper columns: {paper.SOURCES[dataset]}."]
    if dataset == "iemocap":
        setups = sorted({r.setup for r in rows if r.setup is not None})
        unknown = [r.label for r in rows if r.setup is None and r.run != "baseline"]
        if setups:
            parts.append(f"Setup {', '.join(setups)} (from the runs' auxiliary modalities: "
                         "audio A-V, text L-V, both AL-V); the baseline's row is setup V.")
        if unknown:
            parts.append(f"No setup recorded for {', '.join(unknown)} (metrics files "
                         "without `auxiliary`; rerun `amid-evaluate run`): no Table 3 number.")
    recommended = [r.label for r in rows if r.preset not in (None, PAPER_PRESET)]
    if recommended:
        parts.append(f"{', '.join(recommended)}: not the paper's configuration, so no "
                     "paper number beside it.")
    parts.append("Published numbers are printed as the paper gives them and never bolded.")
    return " ".join(parts) + "\n"


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
        for note in (omitted_note(rows), paper_note(rows)):
            if note:
                parts.append(f"\n{note}")
        ladder = ladder_table(rows)
        if ladder:
            parts.append(f"\n### {dataset}: the ablation ladder (the paper's Tables 4 and 5, "
                         f"on UCF51)\n\n{ladder}")
    parts.append(
        "\nPercentages on the test split. Best per column in **bold** (the teacher-alone "
        "row, which sees every modality, is a reference in every column and is not bolded). "
        "Gap = teacher Top-1 − student Top-1 (lower is better; a negative gap, a teacher "
        "below its student, is not bolded). R@K: test embeddings query the training "
        "embeddings by cosine similarity. Rows with n > 1 show mean ± std over folds or "
        "seeds.\n"
    )
    return "".join(parts)
