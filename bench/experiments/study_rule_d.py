"""Rule D of docs/results.md (issue 21): when the recommended teacher freezes.

Written and committed before its runs. The candidates freeze the pre-training
epoch's teacher of highest validation Top-1 (`teacher_pick: best`) after 5, 10
or 15 epochs, at alpha 1 or 0.25 and rule C's other values; rule C's pick (the
last epoch's teacher, after 5) is rerun beside them as the reference, and so is
the baseline, against which every gain here is taken (paired by seed). The bar:
a gain of at least RULE_D_BAR in each clean-label regime; among those that pass,
the largest mean gain over the two noisy-label regimes. Validation numbers only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from study_rules import (
    DISTILLERS,
    FRESH,
    SMALL,
    _options,
    gain,
    label,
    paired_gain_table,
    select,
    tied,
)

# the candidates' axes; rule C's pick (the last epoch's teacher, after 5) beside them
RULE_D_EPOCHS = (5, 10, 15)  # the rule's order of preference on ties: fewer first
RULE_D_ALPHAS = (1.0, 0.25)  # then the larger alpha
CLEAN = ("demo", "weak", "noisy")  # the clean-label datasets; the bar is read on these
RULE_D_BAR = -1.0  # points: the smallest admissible gain in a clean-label regime
RULE_D_BASELINE = "baseline (rule D)"  # the baseline rerun beside rule D's candidates


def rule_d_grid(method: str, tau: float) -> dict[tuple, tuple[str, list[str]]]:
    """(pick, teacher epochs, alpha) -> (setting name, overrides): the six candidates in
    the rule's order of preference, then rule C's pick as the reference."""
    grid = {("best", e, a): (f"{method} D, best of {e}, alpha={a}",
                             [*_options(method, tau, a, e, "class"),
                              f"methods.{method}.teacher_pick=best"])
            for e in RULE_D_EPOCHS for a in RULE_D_ALPHAS}
    grid[("last", 5, 1.0)] = (f"{method} D, last of 5, alpha=1.0 (rule C's pick)",
                              [*_options(method, tau, 1.0, 5, "class"),
                               f"methods.{method}.teacher_pick=last"])
    return grid


def _regimes(by_dataset: dict[str, list[dict]]) -> list[tuple[str, int | None]]:
    return [(name, size) for name in by_dataset for size in (SMALL, None)]


def rule_d_table(by_dataset: dict[str, list[dict]], tau: float
                 ) -> dict[str, dict[str, tuple[float, int] | None]]:
    """setting -> regime -> (validation gain over RULE_D_BASELINE, seeds paired), None
    where the regime was not run (time cut: docs/results.md says which)."""
    return gain_table(by_dataset, [name for name, _ in rule_d_grid("amid", tau).values()])


def gain_table(by_dataset: dict[str, list[dict]], names: list[str]
               ) -> dict[str, dict[str, tuple[float, int] | None]]:
    """setting -> regime -> (validation gain over RULE_D_BASELINE, seeds paired) or None
    (rule D's and rule E's tables: the same baseline runs)."""
    table: dict[str, dict[str, tuple[float, int] | None]] = {}
    for name in names:
        row = table.setdefault(name, {})
        for dataset, size in _regimes(by_dataset):
            records = by_dataset[dataset]
            g = gain(records, name, size, baseline=RULE_D_BASELINE)
            seeds = {r["seed"] for r in select(records, name, size)} & \
                {r["seed"] for r in select(records, RULE_D_BASELINE, size)}
            row[f"{dataset} @ {label(size)}"] = None if g is None else (g[0], len(seeds))
    return table


def choose_d(by_dataset: dict[str, list[dict]], rule_a: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, dict[str, tuple[float, int] | None]]]:
    """Rule D: among the candidates whose gain is >= RULE_D_BAR in every clean-label
    regime, the largest mean gain over the two noisy-label ones (ties: the earlier in
    the grid's order, fewer epochs then the larger alpha); if none is admissible, the
    largest worst clean-label gain. Gains against the baseline rerun beside them.

    A regime not run is left out of a candidate's worst and mean; `decided` says whether
    the pick stands whatever the missing regimes hold (it was run everywhere, and no
    candidate missing a regime could reach it). LookupError if the pick is not decided."""
    grid = rule_d_grid("amid", rule_a["tau"])
    table = rule_d_table(by_dataset, rule_a["tau"])
    if all(v is None for row in table.values() for v in row.values()):
        raise LookupError("rule D: no runs recorded (study.py --parts ruled)")

    def values(k: tuple, clean: bool) -> list[float]:
        return [v[0] for r, v in table[grid[k][0]].items()
                if v is not None and (r.split(" @ ")[0] in CLEAN) == clean]

    def complete(k: tuple) -> bool:
        return all(v is not None for v in table[grid[k][0]].values())

    candidates = [k for k in grid if k[0] == "best"]
    clean = {k: min(values(k, True), default=float("inf")) for k in grid}
    noisy = {k: float(np.mean(values(k, False))) if values(k, False) else float("nan")
             for k in grid}
    admissible = [k for k in candidates if round(clean[k] - RULE_D_BAR, 9) >= 0]
    if admissible:
        best = max(noisy[k] for k in admissible)
        pick = next(k for k in admissible if tied(noisy[k], best))
        # a missing regime may drop a candidate from the bar or move a mean
        decided = all(complete(k) for k in candidates)
    else:  # a missing regime can only lower a candidate's worst: the pick holds if complete
        pick = max(candidates, key=lambda k: clean[k])  # max: the first of equals
        decided = complete(pick)
    if not decided:
        raise LookupError("rule D: the pick depends on regimes not run yet")
    _, epochs, alpha = pick
    ref = ("last", 5, 1.0)
    overrides = {m: [*_options(m, rule_a["tau"], alpha, epochs, "class"),
                     f"methods.{m}.teacher_pick=best"] for m in DISTILLERS}
    return ({"setting": grid[pick][0], "teacher_pick": "best", "teacher_epochs": epochs,
             "alpha": alpha, "admissible": [grid[k][0] for k in admissible],
             "bar_met": bool(admissible), "worst_clean": clean[pick],
             "noisy_mean": noisy[pick],
             "worst_clean_by_candidate": {grid[k][0]: clean[k] for k in grid},
             "not_run": sorted(f"{name} @ {r}" for name, row in table.items()
                               for r, v in row.items() if v is None),
             "reference": {"setting": grid[ref][0], "worst_clean": clean[ref],
                           "noisy_mean": noisy[ref]},
             "overrides": overrides}, table)


def rule_d_report(by_dataset: dict[str, list[dict]], chosen: dict[str, Any]) -> None:
    d, table = chosen["rule_d"], chosen["rule_d_table"]
    regimes = list(next(iter(table.values())))
    print("\nrule D, val gain over the baseline rerun beside it (points; seeds paired), "
          "amid:\n")
    print("| amid candidate | " + " | ".join(regimes) + " | worst clean |")
    print("|---|" + "---|" * (len(regimes) + 1))
    for name, row in table.items():
        cells = ["not run" if v is None else f"{v[0]:+.1f} ({v[1]})" for v in row.values()]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {d['worst_clean_by_candidate'][name]:+.1f} |")
    state = "met" if d["bar_met"] else "NOT met"
    print(f"\nrule D picks {d['setting']!r} (bar {RULE_D_BAR:+.1f} {state}: worst clean "
          f"{d['worst_clean']:+.2f}, noisy-label mean {d['noisy_mean']:+.2f}); mean ± std "
          "of the paired difference:\n")
    rows = [(d["setting"], d["setting"]), (d["reference"]["setting"],) * 2]
    print(paired_gain_table(by_dataset, rows, baseline=RULE_D_BASELINE))
    fresh = f"{d['setting']}{FRESH}"
    for split in ("val", "test"):
        print(f"\nrule D's pick on fresh seeds 5-9, {split} gain over the baseline on the "
              "same seeds (points, mean ± std):\n")
        print(paired_gain_table(by_dataset, [(fresh, fresh)], split, f"baseline{FRESH}"))
