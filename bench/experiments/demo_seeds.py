"""The embedded demo, params.yaml defaults, 3 seeds: main methods, ablations, competitors.

    python bench/experiments/demo_seeds.py [--work /tmp/amid_exp/demo]
        [--parts main ablations competitors] [--seeds 0 1 2]

Builds the demo project in `--work` (`amid-extract demo`, `prepare`, `run -m ...` with the
repository's params.yaml), trains every (method, seed) with `train.seed` in 0, 1, 2,
scores each run's outputs.h5 with `evaluate_outputs`, and prints Markdown tables
(mean ± sample std over seeds). Results go to bench/experiments/results/demo.jsonl;
a rerun skips the runs already recorded there (delete the file to start over).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import (
    ABLATIONS,
    COMPETITORS,
    MAIN_METHODS,
    RESULTS,
    SEEDS,
    Runner,
    build_demo,
    fmt,
    load_results,
    mean_std,
    per_seed,
    table,
)


def findings(records: list[dict]) -> str:
    """The paper's three qualitative claims, checked on the seed means."""
    def mean(variant: str, column: str) -> float | None:
        stat = mean_std(r[column] for r in records if r["variant"] == variant)
        return None if stat is None else stat[0]

    t_alone, t_ts, t_ta = (mean(v, "test_teacher_top1") for v in ("teacher", "ts", "ts_ta"))
    students = {v: mean(v, "test_student_top1") for v in ("baseline", "ts", "ts_ta", "amid")}
    lines = []
    if None not in (t_alone, t_ts, t_ta):
        lines.append(f"- teacher: alone {t_alone:.1f}, in ts {t_ts:.1f}, in ts_ta {t_ta:.1f} "
                     f"(ts weakens it: {t_ts < t_alone}; ts_ta keeps it at least as strong "
                     f"as ts: {t_ta >= t_ts})")
    if None not in students.values():
        best = max(students, key=lambda k: students[k])
        lines.append("- student: " + ", ".join(f"{k} {v:.1f}" for k, v in students.items())
                     + f" (best: {best})")
    base = {r["seed"]: r["test_student_top1"] for r in records if r["variant"] == "baseline"}
    teach = {r["seed"]: r["test_teacher_top1"] for r in records if r["variant"] == "teacher"}
    common = sorted(set(base) & set(teach))
    if common:
        gap = mean_std(teach[s] - base[s] for s in common)
        lines.append(f"- teacher alone minus baseline student (same seed): {fmt(gap)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/amid_exp/demo"))
    parser.add_argument("--results", type=Path, default=RESULTS / "demo.jsonl")
    parser.add_argument("--parts", nargs="+", default=["main", "ablations", "competitors"],
                        choices=["main", "ablations", "competitors"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args()
    results = args.results.resolve()
    build_demo(args.work)
    runner = Runner(args.work, results)
    start = time.perf_counter()
    plan: list[tuple[str, list[str], str]] = []  # (method, overrides, variant)
    if "main" in args.parts:
        plan += [(m, [], m) for m in MAIN_METHODS]
    if "ablations" in args.parts:
        plan += [("amid", o, v) for v, o in ABLATIONS.items()]
    if "competitors" in args.parts:
        plan += [(m, [], m) for m in COMPETITORS]
    for seed in args.seeds:  # seeds outermost: a stopped sweep still has every method
        for method, overrides, variant in plan:
            runner.run(method, seed, overrides, variant)
    records = load_results(results)
    print(f"\nsweep wall time {time.perf_counter() - start:.0f} s\n")
    main_rows = list(MAIN_METHODS)
    print(table(records, main_rows), "\n")
    print(per_seed(records, main_rows), "\n")
    print(findings(records), "\n")
    print(table(records, ["amid", *ABLATIONS]), "\n")
    print(table(records, ["baseline", *COMPETITORS, "amid"]))


if __name__ == "__main__":
    main()
