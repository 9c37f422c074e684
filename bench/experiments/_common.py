"""Shared plumbing of the experiment scripts: projects, stacked runs, results as JSONL, tables.

Every run goes through the library exactly as `amid-train` + `amid-evaluate run` do
(`amid.distill.train.train_members`, then `evaluate_outputs` on each run's
`outputs.h5`), with the caches loaded once per dataset. The seeds of one setting
train together as one stack (the same code as `amid-train --sweep`). Each finished
member appends one JSON line to a results file; rerunning a script skips what is
already there, so an interrupted study resumes. Test numbers come from the LAST
epoch (the trainer never looks at test); validation numbers too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared: one core per process

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = (0, 1, 2, 3, 4)


def build_demo(work: Path, overrides: Sequence[str] = ()) -> Path:
    """The demo project in `work` (the repo's params.yaml with `overrides`), caches built once."""
    import yaml

    from amid.schema import apply_override
    from amid.storage import write_text

    work.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for assignment in overrides:
        apply_override(params, assignment)
    text = yaml.safe_dump(params, sort_keys=False)
    path = work / "params.yaml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_text(path, text)
    steps = [["demo"], ["prepare"], *(["run", "-m", m] for m in ("visual", "audio", "text"))]
    for cmd in steps:  # up to date in a second when nothing changed
        subprocess.run(["amid-extract", *cmd, "-q"], cwd=work, check=True)
    return path


def load_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _val_top1(outputs: Path) -> dict[str, float | None]:
    """Validation Top-1 of student and teacher (None for a model the run lacks), read
    through the evaluator's own reader (a teacher is scored on the rows it has)."""
    from amid.evaluate.metrics import weighted_accuracy
    from amid.evaluate.outputs import read_outputs

    val = read_outputs(outputs).split("val")
    return {role: None if (m := getattr(val, role)) is None
            else weighted_accuracy(m.labels, m.logits.argmax(axis=1))
            for role in ("student", "teacher")}


class Runner:
    """Trains and scores settings of one project folder, the seeds of each as one stack."""

    def __init__(self, work: Path, results: Path, base_overrides: Sequence[str] = ()) -> None:
        from amid.config import load_config
        from amid.distill.methods import check_method_options
        from amid.distill.train import data_from_config

        self.work = work.resolve()
        self.results = results
        self.base = list(base_overrides)
        os.chdir(self.work)  # the configuration's paths are relative to the project
        cfg = load_config(self.work / "params.yaml", [*self.base, "train.device=cpu"],
                          check=check_method_options)
        self.data = data_from_config(cfg, torch.device("cpu"))
        self.done = {(r["variant"], r["seed"]) for r in load_results(results)}

    def run(self, variant: str, method: str, overrides: Sequence[str] = (),
            seeds: Sequence[int] = SEEDS, extra: dict[str, Any] | None = None) -> None:
        """Train the seeds of one setting (those not recorded yet) as one stack, record each."""
        self.run_many(method, [(variant, list(overrides), extra or {})], seeds)

    def run_many(self, method: str, settings: Sequence[tuple[str, list[str], dict[str, Any]]],
                 seeds: Sequence[int] = SEEDS) -> None:
        """(variant, overrides, extra fields) x seeds of one method as ONE stack: the
        settings must differ only in per-member values (seeds, weights, temperatures)."""
        from amid.config import load_config
        from amid.distill.methods import check_method_options
        from amid.distill.train import train_members

        todo = [(v, o, e, s) for v, o, e in settings for s in seeds if (v, s) not in self.done]
        if not todo:
            return
        cfgs = [load_config(self.work / "params.yaml",
                            [*self.base, *o, f"train.seed={s}", "train.device=cpu"],
                            check=check_method_options) for _, o, _, s in todo]
        runs = [self.work / "runs" / f"{_slug(v)}__s{s}" for v, _, _, s in todo]
        for run in runs:  # a leftover checkpoint would be resumed
            shutil.rmtree(run, ignore_errors=True)
        start = time.perf_counter()
        members = train_members(method, cfgs, runs, data=self.data, live=False,
                                stacked=len(todo) > 1)
        wall = (time.perf_counter() - start) / len(todo)
        self.results.parent.mkdir(parents=True, exist_ok=True)
        records = []
        with self.results.open("a", encoding="utf-8") as fh:
            for (variant, overrides, extra, seed), run, member in zip(todo, runs, members,
                                                                     strict=True):
                record = self._record(variant, method, seed, overrides, run, member, wall)
                records.append(record | extra)
                fh.write(json.dumps(records[-1]) + "\n")
                self.done.add((variant, seed))
                shutil.rmtree(run, ignore_errors=True)  # recorded; the folders add up
        for variant in dict.fromkeys(r["variant"] for r in records):
            top = [r["test_student_top1"] for r in records
                   if r["variant"] == variant and r["test_student_top1"] is not None]
            print(f"{variant:56s} {len(top)} seeds: student test "
                  f"{100 * np.mean(top) if top else float('nan'):5.1f} ({wall:.1f} s/run)",
                  flush=True)

    def _record(self, variant: str, method: str, seed: int, overrides: Sequence[str],
                run: Path, member: Any, wall: float) -> dict[str, Any]:
        from amid.evaluate.evaluate import evaluate_outputs

        history = member.history
        last = history[-1] if history else {}
        metrics = evaluate_outputs(run / "outputs.h5") if member.error is None else {}
        val = _val_top1(run / "outputs.h5") if member.error is None else {}
        grads = {k: [row[k] for row in history] for k in last if k.startswith("grad_")}
        return {
            "variant": variant, "method": method, "seed": seed,
            "overrides": [*self.base, *overrides], "epochs": len(history),
            "wall_s": round(wall, 2), "error": member.error,
            "train_samples": metrics.get("training_set", {}).get("samples"),
            "test_student_top1": metrics.get("student", {}).get("top1"),
            "test_teacher_top1": metrics.get("teacher", {}).get("top1"),
            "test_student_r1": metrics.get("student", {}).get("retrieval", {}).get("R@1"),
            "val_student_top1": val.get("student"),
            "val_teacher_top1": val.get("teacher"),
            "train_student_top1": last.get("train_acc_student"),
            "train_teacher_top1": last.get("train_acc_teacher"),
            **({"teacher_disagreement": last["teacher_disagreement"]}  # min_disagreement's
               if "teacher_disagreement" in last else {}),
            # per-epoch gradient norms each term sent into the student encoder
            "grads": grads,
        }


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def mean_std(values: Iterable[float | None]) -> tuple[float, float, int] | None:
    """Mean and sample std (ddof=1) in percent, and the count; None when no values."""
    vals = np.array([v for v in values if v is not None], dtype=float) * 100
    if len(vals) == 0:
        return None
    std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return float(vals.mean()), std, len(vals)


def fmt(stat: tuple[float, float, int] | None) -> str:
    return "-" if stat is None else f"{stat[0]:.1f} ± {stat[1]:.1f}"


COLUMNS = ("test_student_top1", "test_teacher_top1", "val_student_top1", "val_teacher_top1")


def table(records: list[dict[str, Any]], variants: Sequence[str] | None = None) -> str:
    """Markdown: one row per variant, mean ± std over seeds of each accuracy, the gap."""
    order = list(variants) if variants else list(dict.fromkeys(r["variant"] for r in records))
    lines = ["| method | seeds | student test | teacher test | gap (T-S) test | "
             "student val | teacher val | wall s/run |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in order:
        rows = [r for r in records if r["variant"] == variant]
        if not rows:
            continue
        stats = {c: mean_std(r[c] for r in rows) for c in COLUMNS}
        gaps = mean_std(r["test_teacher_top1"] - r["test_student_top1"] for r in rows
                        if r["method"] != "teacher" and r["test_teacher_top1"] is not None
                        and r["test_student_top1"] is not None)
        wall = np.mean([r["wall_s"] for r in rows])
        lines.append(
            f"| {variant} | {len(rows)} | {fmt(stats['test_student_top1'])} | "
            f"{fmt(stats['test_teacher_top1'])} | {fmt(gaps)} | "
            f"{fmt(stats['val_student_top1'])} | {fmt(stats['val_teacher_top1'])} | {wall:.1f} |"
        )
    return "\n".join(lines)
