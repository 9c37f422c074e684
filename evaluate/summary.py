"""Mean and standard deviation of metrics over folds or seeds.

A summary keeps the layout of a metrics file (docs/outputs.md), with every numeric
leaf replaced by its mean, so whatever reads metrics files (the report, `dvc
metrics show`) reads summaries too; the spread sits alongside in `std`, with
`n`, `folds` and `seeds` saying what was averaged. The standard deviation is
the population one (ddof = 0), as numpy's default, defined also for n = 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amid.errors import AmidError

_BLOCKS = ("student", "teacher")


def read_metrics(path: str | Path) -> dict[str, Any]:
    """Load one metrics or summary JSON, with errors naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AmidError(f"metrics file {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise AmidError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise AmidError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise AmidError(f"metrics file {path} cannot be read: {exc.strerror}") from None
    if not isinstance(data, dict) or not any(b in data for b in _BLOCKS):
        raise AmidError(f"{path}: not a metrics file (no 'student' or 'teacher' block)")
    check_numbers(data, path)
    return data


def check_numbers(data: dict[str, Any], path: str | Path) -> None:
    """Every metric (a leaf of `student`, `teacher`, `std`) must be a finite number.

    A hand-edited `"top1": "high"` would otherwise be skipped (a mean over the
    other files, under a count that still says all of them) and a NaN would be
    averaged into NaN; both are refused naming the file and the key.
    """
    for block in (*_BLOCKS, "std"):
        if block not in data:
            continue
        if not isinstance(data[block], dict):
            raise AmidError(f"{path}: `{block}` must be a mapping of metrics, found "
                            f"{json.dumps(data[block])[:40]}")
        for keys, value in _walk(data[block], (block,)):
            dotted = ".".join(keys)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise AmidError(f"{path}: {dotted} is {json.dumps(value)[:40]}, not a number")
            if not math.isfinite(value):
                raise AmidError(f"{path}: {dotted} is {value}, not a finite number")


def _walk(tree: dict[str, Any], prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += _walk(value, (*prefix, str(key)))
        else:
            out.append(((*prefix, str(key)), value))
    return out


def is_summary(metrics: dict[str, Any]) -> bool:
    return "std" in metrics and "n" in metrics


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    flat: dict[tuple[str, ...], float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_leaves(value, (*prefix, key)))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[(*prefix, key)] = float(value)
    return flat


def _nest(flat: dict[tuple[str, ...], float]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for keys, value in flat.items():
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return tree


def _one(values: list[Any], what: str, where: Sequence[Path]) -> Any:
    distinct = sorted({json.dumps(v) for v in values})
    if len(distinct) > 1:
        listing = ", ".join(str(p) for p in where)
        raise AmidError(
            f"cannot average metrics of different {what}s ({', '.join(distinct)}): {listing}"
        )
    return values[0]


# The run fields of evaluate.run_fields: seeds or folds of one run share them, and files
# of two runs (amid at two presets) are never averaged into one.
_RUN_FIELDS = (("run", "run"), ("preset", "preset"), ("label", "label"),
               ("auxiliary", "auxiliary modality set"))


def _run_fields(runs: list[dict[str, Any]], paths: Sequence[Path]) -> dict[str, Any]:
    fields = {}
    for key, what in _RUN_FIELDS:
        have = [(r[key], p) for r, p in zip(runs, paths, strict=True) if key in r]
        if have:  # files written before the field existed say nothing against it
            fields[key] = _one([v for v, _ in have], what, [p for _, p in have])
    return fields


def summarize(metrics_files: Sequence[str | Path]) -> dict[str, Any]:
    """Mean and std over folds/seeds of every numeric metric of the given files.

    All files must be of one method and one dataset. A metric missing from some
    files (a teacher that only some runs have) is averaged over the files that
    have it, and `count` records how many that was whenever it is fewer than `n`.
    """
    paths = [Path(p) for p in metrics_files]
    if not paths:
        raise AmidError("summarize needs at least one metrics file")
    runs = [read_metrics(p) for p in paths]
    nested = [str(p) for r, p in zip(runs, paths, strict=True) if is_summary(r)]
    if nested:
        listing = ", ".join(nested)
        raise AmidError(f"summarize takes per-run metrics files, not summaries: {listing}")
    method = _one([r.get("method") for r in runs], "method", paths)
    dataset = _one([r.get("dataset") for r in runs], "dataset", paths)
    columns: dict[tuple[str, ...], list[float]] = {}
    for run in runs:
        for key, value in _leaves({b: run[b] for b in _BLOCKS if b in run}).items():
            columns.setdefault(key, []).append(value)
    mean = {k: float(np.mean(v)) for k, v in columns.items()}
    std = {k: float(np.std(v)) for k, v in columns.items()}
    count = {k: len(v) for k, v in columns.items() if len(v) < len(runs)}
    summary: dict[str, Any] = {
        "method": method, "dataset": dataset, "fold": None,
        "seed": runs[0].get("seed") if len({json.dumps(r.get("seed")) for r in runs}) == 1
        else None,
        **_run_fields(runs, paths),
        **_nest(mean),
        "std": _nest(std),
        "n": len(runs),
        "folds": [r.get("fold") for r in runs],
        "seeds": [r.get("seed") for r in runs],
        "files": [str(p) for p in paths],
    }
    if count:
        summary["count"] = _nest(dict(count))
    omitted = {k: v for r in runs if isinstance(r.get("omitted"), dict)
               for k, v in r["omitted"].items()}
    if omitted:  # trivially-100 % metrics left out of some run: say so in the summary too
        summary["omitted"] = dict(sorted(omitted.items()))
    return summary
