"""Score a sweep (`amid-train --sweep/--grid`): every member, then mean ± std over seeds.

Reads `<sweep>/sweep.json`, scores each member's `outputs.h5` like
`amid-evaluate run` (no plot data: a grid of dozens of runs is read as a
table), writes each member's metrics to `<out stem>/<member>.json`, and
groups the members by every axis but the repetition axes (`train.seed`,
`dataset.fold`): a group's figures are `summary.summarize` over its seeds and
folds, so `--sweep 'dataset.fold=[1,2,3,4,5]'` gives IEMOCAP's five-fold mean.
`<out>` (JSON, for `dvc metrics show` and `dvc metrics diff`) and `<out stem>.md`
(the ablation table) hold the groups.

A member whose training failed (its `error` in sweep.json) is listed as
failed and left out of its group's mean; a sweep where every member failed
is an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amid.errors import AmidError
from amid.evaluate.evaluate import check_metrics_path, evaluate_outputs, write_metrics
from amid.evaluate.summary import summarize
from amid.storage import write_text

REPEATS = ("train.seed", "dataset.fold")  # averaged over, never a group of their own


def read_sweep(folder: Path) -> dict[str, Any]:
    path = folder / "sweep.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AmidError(f"{path} does not exist: {folder} is not a sweep folder of "
                        "amid-train --sweep/--grid") from None
    except json.JSONDecodeError as exc:
        raise AmidError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise AmidError(f"{path}: no 'members' list; not written by amid-train --sweep")
    return data


def group_name(overrides: dict[str, Any]) -> str:
    """`alpha=4.0,tau=0.1` from the other overrides (last key part), `all` when none."""
    parts = [f"{k.rsplit('.', 1)[-1]}={json.dumps(v)}" for k, v in overrides.items()
             if k not in REPEATS]
    return ",".join(parts) or "all"


def evaluate_sweep(folder: str | Path, out: str | Path, ks: Sequence[int], chunk_size: int,
                   split: str, gallery_split: str, *,
                   gallery_chunk_size: int = 8192) -> dict[str, Any]:
    """Score every member of the sweep in `folder`; write and return the grouped summary."""
    folder, out = Path(folder), check_metrics_path(out)
    sweep = read_sweep(folder)
    member_dir = out.with_suffix("")
    groups: dict[str, list[Path]] = {}
    failed: list[str] = []
    for k, member in enumerate(sweep["members"]):
        if not isinstance(member, dict) or not isinstance(member.get("name"), str) \
                or member["name"] in ("", ".", "..") or "/" in member["name"] \
                or not isinstance(member.get("overrides", {}), dict):
            raise AmidError(f"{folder / 'sweep.json'}: members[{k}] needs a `name` (a folder "
                            "name, no '/') and an `overrides` mapping")
        member.setdefault("overrides", {})
        name = member["name"]
        if member.get("error"):
            failed.append(name)
            continue
        metrics = evaluate_outputs(folder / name / "outputs.h5", ks, chunk_size, split,
                                   gallery_split, gallery_chunk_size=gallery_chunk_size)
        path = write_metrics({**metrics, "overrides": member["overrides"]},
                             member_dir / f"{name}.json")
        groups.setdefault(group_name(member["overrides"]), []).append(path)
    if not groups:
        raise AmidError(f"{folder / 'sweep.json'}: every member failed to train "
                        f"({', '.join(failed)}); nothing to score")
    result = {
        "sweep": folder.name,
        "method": sweep.get("method"),
        "axes": sweep.get("axes", {}),
        "split": split,
        "groups": {g: summarize(files) for g, files in groups.items()},
        "failed": failed,
    }
    write_metrics(result, out)
    write_text(out.with_suffix(".md"), ablation_table(result))
    return result


def _cell(summary: dict[str, Any], block: str, *path: str) -> str:
    mean, std = summary.get(block, {}), summary.get("std", {}).get(block, {})
    for key in path:
        mean, std = mean.get(key, {}), std.get(key, {})
    if not isinstance(mean, float):
        return "–"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if summary["n"] > 1 else f"{100 * mean:.1f}"


def ablation_table(result: dict[str, Any]) -> str:
    """Markdown: one row per group, percentages as mean ± std over its seeds.

    The run is named by its label, as in the report (`amid (recommended)` for
    members at a preset other than the paper's: `labels.display_label`, which
    each member's metrics file records): in the title when every group has the
    same one, else in a column of its own (a sweep over `preset`)."""
    labels = {g: s.get("label") or result["method"] for g, s in result["groups"].items()}
    one = len(set(labels.values())) == 1
    title = next(iter(labels.values())) if one else result["method"]
    lines = [
        f"# Sweep {result['sweep']} ({title}, {result['split']} split)",
        "",
        "Mean ± std over seeds (population std); n = seeds in the group.",
        "",
        f"| group |{'' if one else ' run |'} n | student top-1 | student UA | student R@1 "
        "| teacher top-1 |",
        f"|---|{'' if one else '---|'}---|---|---|---|---|",
    ]
    for name, s in result["groups"].items():
        run = "" if one else f" {labels[name]} |"
        lines.append(f"| {name} |{run} {s['n']} | {_cell(s, 'student', 'top1')} | "
                     f"{_cell(s, 'student', 'ua')} | {_cell(s, 'student', 'retrieval', 'R@1')} | "
                     f"{_cell(s, 'teacher', 'top1')} |")
    if result["failed"]:
        lines += ["", f"Failed members (not averaged): {', '.join(result['failed'])}."]
    return "\n".join(lines) + "\n"
