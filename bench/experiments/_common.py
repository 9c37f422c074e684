"""Shared plumbing of the experiment scripts: one thread, fresh runs, results as JSONL, tables.

Every run goes through the library exactly as `amid-train` + `amid-evaluate run` do
(`amid.distill.train.train`, then `evaluate_outputs` on the run's `outputs.h5`), with
the caches loaded once per dataset and handed to `train(data=...)`. Each finished run
appends one JSON line to a results file; rerunning a script skips what is already
there, so an interrupted sweep resumes. Test numbers come from the LAST epoch (the
trainer never looks at test); validation accuracies are the last epoch's as well.
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
MAIN_METHODS = ("baseline", "teacher", "ts", "ts_ta", "amid")
SEEDS = (0, 1, 2)
ABLATIONS = {  # variant name -> overrides on top of method `amid` (DESIGN 4.5)
    "amid, mi_variant=ccl": ["train.loss.mi_variant=ccl"],
    "amid, fixed_teacher": ["train.loss.fixed_teacher=true"],
    "amid, warmup_epochs=0": ["train.loss.warmup_epochs=0"],
    "amid, enhanced_disc=false": ["train.loss.enhanced_disc=false"],
    "amid, dynamic_weights=false": ["train.loss.dynamic_weights=false"],
}
COMPETITORS = ("crd", "gmc", "ccl", "crcd")


def build_demo(work: Path, params: Path = REPO / "params.yaml") -> Path:
    """The demo project in `work` (params.yaml copied from the repo), caches built once."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(params, work / "params.yaml")
    if not (work / "cache" / "demo" / "text__hashing.h5").exists():
        steps = [["amid-extract", "demo"], ["amid-extract", "prepare"]]
        steps += [["amid-extract", "run", "-m", m, "--quiet"] for m in ("visual", "audio", "text")]
        for cmd in steps:
            subprocess.run(cmd, cwd=work, check=True)
    return work / "params.yaml"


def load_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class Runner:
    """Trains and scores (variant, method, seed) triples of one project folder."""

    def __init__(self, work: Path, results: Path, base_overrides: Sequence[str] = ()) -> None:
        from amid.config import load_config
        from amid.distill.train import data_from_config

        self.work = work.resolve()
        self.results = results
        self.base = list(base_overrides)
        os.chdir(self.work)  # the configuration's paths are relative to the project
        cfg = load_config(self.work / "params.yaml", self.base)
        self.data = data_from_config(cfg, torch.device("cpu"))
        self.done = {(r["variant"], r["method"], r["seed"]) for r in load_results(results)}

    def run(self, method: str, seed: int, overrides: Sequence[str] = (),
            variant: str | None = None) -> dict[str, Any] | None:
        """Train one run into a fresh folder, score it, append its record; None if done."""
        from amid.config import load_config
        from amid.distill.train import train
        from amid.evaluate.evaluate import evaluate_outputs

        variant = variant or method
        if (variant, method, seed) in self.done:
            return None
        cfg = load_config(self.work / "params.yaml",
                          [*self.base, *overrides, f"train.seed={seed}", "train.device=cpu"])
        run_dir = self.work / "runs" / f"{_slug(variant)}__s{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # a leftover checkpoint would be resumed
        start = time.perf_counter()
        history = train(method, cfg, run_dir, data=self.data, live=False)
        wall = time.perf_counter() - start
        metrics = evaluate_outputs(run_dir / "outputs.h5")
        last = history[-1]
        record = {
            "variant": variant, "method": method, "seed": seed,
            "overrides": [*self.base, *overrides], "epochs": len(history),
            "wall_s": round(wall, 2),
            "test_student_top1": metrics.get("student", {}).get("top1"),
            "test_teacher_top1": metrics.get("teacher", {}).get("top1"),
            "test_student_r1": metrics.get("student", {}).get("retrieval", {}).get("R@1"),
            "val_student_top1": last.get("val_acc_student"),
            "val_teacher_top1": last.get("val_acc_teacher"),
        }
        self.results.parent.mkdir(parents=True, exist_ok=True)
        with self.results.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        self.done.add((variant, method, seed))
        print(f"{variant:32s} seed {seed}: student {_pct(record['test_student_top1'])} "
              f"teacher {_pct(record['test_teacher_top1'])} ({wall:.1f} s)", flush=True)
        return record


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _pct(value: float | None) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}"


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
    """Markdown: one row per variant, mean ± std over seeds of each accuracy, the gap.

    The gap is teacher minus student test Top-1 of the same run (methods with both;
    not for `teacher`, whose "student" is E_S + g never trained on its own).
    """
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


def per_seed(records: list[dict[str, Any]], variants: Sequence[str]) -> str:
    """Markdown: student/teacher test Top-1 of every seed, for checking the spread by eye."""
    seeds = sorted({r["seed"] for r in records})
    head = "| method | " + " | ".join(f"seed {s} S / T" for s in seeds) + " |"
    lines = [head, "|---|" + "---|" * len(seeds)]
    for variant in variants:
        cells = []
        for s in seeds:
            hit = [r for r in records if r["variant"] == variant and r["seed"] == s]
            cells.append("-" if not hit else
                         f"{_pct(hit[0]['test_student_top1']).strip()} / "
                         f"{_pct(hit[0]['test_teacher_top1']).strip()}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
