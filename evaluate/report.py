"""Paper-style results: Markdown tables (methods x metrics) and figures.

Rows come from whatever metrics files exist, one per run (`run` in the metrics
file: `amid`, `amid_ccl`, an ablation trained as method `amid`; for files older
than that field, the file name without its `_fold<k>`/`_seed<k>` suffix),
labelled with its preset (`amid (recommended)`). Files of one run that differ
only by fold or seed become one row (mean ± std, via `summarize`); a summary
file stands for the per-fold files of its run. For the paper's datasets the
tables set the published numbers beside ours (tables.py, paper.py).
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py

from amid.cache import attr_value
from amid.errors import AmidError, OutputError
from amid.evaluate import figures, paper
from amid.evaluate.labels import display_label, file_stem, read_identity
from amid.evaluate.summary import is_summary, read_metrics, summarize
from amid.evaluate.tables import Row, markdown_report, markdown_table  # noqa: F401  (API)
from amid.storage import write_text

log = logging.getLogger(__name__)

# The paper's order: the ladder (Table 4), then the competitors as Table 1 lists them.
METHOD_ORDER = ("baseline", "teacher", "kd", "ts", "ts_ta", "amid", "crd", "gmc", "ccl", "crcd")
_LADDER = [run for run, _ in paper.LADDER]
_SUFFIX = re.compile(r"(?:(?:^|[_.-])(?:fold|seed)[_-]?\d+|[_.-][fs]\d+)+$", re.IGNORECASE)


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
    stem = repeat_group(path.stem)
    return stem or path.parent.name


def repeat_group(name: str) -> str:
    """A metrics file's or run folder's name without its fold/seed suffix
    (`amid_seed1` -> `amid`): the repeats that one row or one line averages."""
    return _SUFFIX.sub("", name)


def _order(row: Row) -> tuple[int, str, int, str]:
    rank = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    # variants of one method in the order of the paper's Tables 4 and 5, others by name
    rung = _LADDER.index(row.run) if row.run in _LADDER else len(_LADDER)
    return rank, row.method if rank == len(METHOD_ORDER) else "", rung, row.label


def collect_rows(paths: Sequence[str | Path]) -> dict[str, list[Row]]:
    """Group metrics files into rows, per dataset, in the paper's row order.

    A row is one run: its `run` name and `preset` as the metrics file records
    them (`amid_ccl`, `amid (recommended)`); a file older than those fields is
    named by its file name without a seed/fold suffix (the pipeline's run name:
    `metrics/amid_ccl.json`). Files of one run under different names (the same
    run trained twice, into two folders) are told apart by file name.
    """
    loaded = [(Path(p), read_metrics(p)) for p in paths]
    Key = tuple[str, str, str | None, str]  # dataset, run, preset, method
    by_run: dict[Key, list[tuple[Path, dict[str, Any]]]] = {}
    for path, data in loaded:
        run = data.get("run") or variant_name(path)
        preset = data.get("preset")
        key = (str(data.get("dataset")), str(run), preset if isinstance(preset, str) else None,
               str(data.get("method")))
        by_run.setdefault(key, []).append((path, data))
    tables: dict[str, list[Row]] = {}
    for (dataset, run, preset, method), items in by_run.items():
        variants = {variant_name(p) for p, _ in items}
        groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
        for path, data in items:
            groups.setdefault(variant_name(path) if len(variants) > 1 else run, []).append(
                (path, data))
        for name, group in groups.items():
            tables.setdefault(dataset, []).append(_row(name, preset, method, dataset, group))
    for rows in tables.values():
        rows.sort(key=_order)
    return dict(sorted(tables.items()))


def _row(run: str, preset: str | None, method: str, dataset: str,
         group: list[tuple[Path, dict[str, Any]]]) -> Row:
    label = display_label(run, preset)
    runs = [(p, d) for p, d in group if not is_summary(d)]
    summaries = [(p, d) for p, d in group if is_summary(d)]
    if summaries:
        data = summaries[0][1]
        files = [Path(f) for f in data.get("files", [])] or [p for p, _ in runs]
        return Row(label, method, dataset, data, data["std"], int(data["n"]), files, run,
                   preset)
    if len(runs) == 1:
        return Row(label, method, dataset, runs[0][1], None, 1, [runs[0][0]], run, preset)
    summary = summarize([p for p, _ in runs])
    return Row(label, method, dataset, summary, summary["std"], len(runs),
               [p for p, _ in runs], run, preset)


# ------------------------------------------------------------------ report


def _pick_pair(rows: list[Row], compare: Sequence[str]) -> list[Row]:
    with_data = [r for r in rows if r.plot_dirs]
    chosen: list[Row] = []
    for name in compare:  # a label (`amid (recommended)`), else the first run of that name
        hits = [r for r in with_data if r.label == name and r not in chosen] or \
            [r for r in with_data if r.run == name and r not in chosen]
        chosen += hits[:1]
    for row in with_data:
        if len(chosen) >= 2:
            break
        if row not in chosen:
            chosen.append(row)
    return chosen[:2]


# Everything the report writes into its folder, by name: a figure of an
# earlier report that this one did not write again (a method or dataset no
# longer present) is removed, so the folder never mixes two reports. Other
# files in the folder are left alone.
OWNED = re.compile(
    r"^(?:results\.md|curves\.csv|gap_over_epochs\.png|cos_same_class\.png"
    r"|(?:.+_)?per_class\.png|(?:.+_)?(?:confusion|embedding|diagnostics)_.+\.png)$"
)


def run_dataset(run_dir: Path) -> str | None:
    """The dataset a run folder was trained on (config.json, else outputs.h5); None if unknown."""
    try:
        data = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        name = data["config"]["dataset"]["name"]
        if isinstance(name, str):
            return name
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with h5py.File(run_dir / "outputs.h5", "r") as f:
            value = attr_value(f.attrs.get("dataset"))
        return value if isinstance(value, str) else None
    except (OSError, ValueError):
        return None


def scope(tables: dict[str, list[Row]], dataset: str | None
          ) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Only `dataset`'s table (all when None); the others' file counts, for the note."""
    if dataset is None:
        return tables, {}
    if dataset not in tables:
        have = ", ".join(tables) or "none"
        raise AmidError(f"no metrics file of dataset {dataset!r} (the files found are of: "
                        f"{have}); run `amid-evaluate run` on its runs, or pass --dataset")
    others = {d: sum(len(r.files) or 1 for r in rows) for d, rows in tables.items()
              if d != dataset}
    return {dataset: tables[dataset]}, others


def remove_stale(out: Path, written: list[Path]) -> list[Path]:
    """Delete the report files (by `OWNED` name) in `out` that this report did not write."""
    keep = {p.name for p in written}
    removed = []
    for path in sorted(out.iterdir()):
        if path.name in keep or not OWNED.match(path.name) or not path.is_file():
            continue
        try:
            path.unlink()
        except OSError as exc:
            raise OutputError(f"cannot remove the stale report file {path}: "
                              f"{exc.strerror}") from None
        removed.append(path)
    return removed


def write_report(
    metrics_files: Sequence[str | Path],
    out_dir: str | Path,
    runs_dir: str | Path | None = None,
    compare: Sequence[str] = ("amid", "baseline"),
    dataset: str | None = None,
) -> list[Path]:
    """Write `results.md` and the figures into `out_dir`; returns the files written.

    With `dataset`, only that dataset's metrics files and run histories are
    reported (a clone's demo results never sit beside a user's own); without
    it, every dataset gets its own table and prefixed figures. Report files of
    an earlier report that this one did not write are removed.
    """
    if not metrics_files:
        raise AmidError("no metrics files matched; run `amid-evaluate run` first")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; the report needs a folder")
    tables, others = scope(collect_rows(metrics_files), dataset)
    if others:
        log.warning("report of dataset %s only: left out the metrics files of %s", dataset,
                    ", ".join(f"{d} ({n})" for d, n in others.items()))
    written = [write_text(out / "results.md", markdown_report(tables, others), OutputError)]
    multi = len(tables) > 1
    for name, rows in tables.items():
        prefix = f"{name}_" if multi else ""
        pair = _pick_pair(rows, compare)
        if len(pair) == 2:
            written += figures.per_class_figure(
                [(r.label, r.plot_dirs) for r in pair], out / f"{prefix}per_class.png"
            )
        for row in rows:
            if row.plot_dirs:
                stem = file_stem(row.label)
                written += figures.confusion_figure(
                    row.plot_dirs, out / f"{prefix}confusion_{stem}.png", row.label
                )
                written += figures.embedding_figure(
                    row.plot_dirs[0], out / f"{prefix}embedding_{stem}.png", row.label
                )
    if runs_dir is not None and Path(runs_dir).is_dir():
        runs = run_folders(Path(runs_dir))
        if dataset is not None:  # runs of other datasets would draw their curves here too
            runs = [r for r in runs if run_dataset(r) in (dataset, None)]
        written += _history_figures(runs, out)
    remove_stale(out, written)
    return written


def run_folders(folder: Path) -> list[Path]:
    """The run folders in `folder`, by name: each subfolder, except that a folder of one
    configuration's seeds (`amid-train --repeat-seeds`, dvc.yaml's train@<m>: its
    sweep.json has the one axis train.seed) stands for its runs (`runs/amid/amid_seed1`)."""
    found = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            axes = json.loads((sub / "sweep.json").read_text(encoding="utf-8")).get("axes")
        except (OSError, ValueError, AttributeError):
            axes = None
        if isinstance(axes, dict) and list(axes) == ["train.seed"]:
            found += [p for p in sub.iterdir() if p.is_dir()]
        else:
            found.append(sub)
    return sorted(found, key=lambda p: p.name)


def run_folder_identity(run: Path) -> tuple[str, str, str]:
    """(name, label, method) of a run folder: the name without its seed/fold suffix,
    labelled with its preset (`amid (recommended)`); from its config.json when it can."""
    name = repeat_group(run.name) or run.name
    try:
        identity = read_identity(run, name)
    except AmidError as exc:  # a damaged config.json costs its label, not the report
        log.warning("%s; labelled by its folder name", exc)
        identity = None
    if identity is None:
        return name, name, name
    return name, display_label(name, identity.preset), identity.method


def _history_figures(runs: list[Path], out: Path) -> list[Path]:
    """The per-epoch figures (gap, same-class cosine, diagnostics) and `curves.csv`."""
    who = {run.name: run_folder_identity(run) for run in runs}
    # both curves compare the teacher with the student; the `teacher` method's student
    # is an untrained by-product, so its lines would show a gap no method has
    paired = [run for run in runs if who[run.name][2] != "teacher"]
    curves = figures.history_table(paired, {"acc_gap": figures.GAP_METRIC,
                                            "cos_same_class": figures.COS_METRIC})
    curves.insert(2, "method", curves["run"].map(lambda r: who[r][0]))
    curves.insert(3, "label", curves["run"].map(lambda r: who[r][1]))
    written = figures.history_figure(curves, "acc_gap", out / "gap_over_epochs.png",
                                     "teacher − student accuracy")
    written += figures.history_figure(curves, "cos_same_class", out / "cos_same_class.png",
                                      "same-class teacher-student cosine")
    groups: dict[str, list[Path]] = {}
    for run in runs:
        groups.setdefault(who[run.name][0], []).append(run)
    for name, members in groups.items():  # the run folders' diagnostics, explained
        _, label, method = who[members[0].name]
        written += figures.diagnostics_figure(members, out / f"diagnostics_{name}.png",
                                              f"{label}: diagnostics",
                                              student=method != "teacher")
    if not curves.empty:  # the data of dvc.yaml's top-level plots
        written.append(write_text(out / "curves.csv", curves.to_csv(index=False),
                                  OutputError))
    return written
