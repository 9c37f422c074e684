"""Rule E of docs/results.md (issue 21): the student does not wait.

Written and committed before its runs. Rule D's candidates with the student
training on its own CE while the teacher pre-trains (`student_waits: false`):
teacher best of 5 or 15 epochs x alpha 1 or 0.25. Read on the regimes, seeds and
baseline runs of rule D's table (study_rule_d.gain_table); the bar is rule D's.
If no candidate meets it, the best of them replaces rule D's pick only if its
worst clean-label gain is larger. Validation numbers only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from study_rule_d import CLEAN, RULE_D_BAR, gain_table
from study_rules import DISTILLERS, _options, tied

RULE_E_EPOCHS = (5, 15)  # ties: fewer first
RULE_E_ALPHAS = (1.0, 0.25)  # then the larger alpha
NOT_WAITING = "student_waits=false"


def rule_e_grid(method: str, tau: float) -> dict[tuple, tuple[str, list[str]]]:
    """(teacher epochs, alpha) -> (setting name, overrides), in the rule's order."""
    return {(e, a): (f"{method} E, not waiting, best of {e}, alpha={a}",
                     [*_options(method, tau, a, e, "class"),
                      f"methods.{method}.teacher_pick=best", f"methods.{method}.{NOT_WAITING}"])
            for e in RULE_E_EPOCHS for a in RULE_E_ALPHAS}


def choose_e(by_dataset: dict[str, list[dict]], rule_a: dict[str, Any], rule_d: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, dict[str, tuple[float, int] | None]]]:
    """Rule E's pick, and whether it replaces rule D's (`replaces`). LookupError until
    every candidate ran in every regime rule D's pick ran in."""
    grid = rule_e_grid("amid", rule_a["tau"])
    table = gain_table(by_dataset, [name for name, _ in grid.values()])
    if any(v is None for row in table.values() for v in row.values()):
        raise LookupError("rule E: not every candidate ran in every regime (--parts rulee)")

    def values(k: tuple, clean: bool) -> list[float]:
        return [v[0] for r, v in table[grid[k][0]].items() if (r.split(" @ ")[0] in CLEAN)
                == clean]

    clean = {k: min(values(k, True)) for k in grid}
    noisy = {k: float(np.mean(values(k, False))) for k in grid}
    admissible = [k for k in grid if round(clean[k] - RULE_D_BAR, 9) >= 0]
    if admissible:
        best = max(noisy[k] for k in admissible)
        pick = next(k for k in admissible if tied(noisy[k], best))
    else:
        pick = max(grid, key=lambda k: clean[k])  # max: the first of equals
    replaces = bool(admissible) or clean[pick] > rule_d["worst_clean"]
    epochs, alpha = pick
    overrides = {m: [*_options(m, rule_a["tau"], alpha, epochs, "class"),
                     f"methods.{m}.teacher_pick=best", f"methods.{m}.{NOT_WAITING}"]
                 for m in DISTILLERS}
    return ({"setting": grid[pick][0], "teacher_pick": "best", "teacher_epochs": epochs,
             "alpha": alpha, "student_waits": False, "bar_met": bool(admissible),
             "admissible": [grid[k][0] for k in admissible], "worst_clean": clean[pick],
             "noisy_mean": noisy[pick], "replaces_rule_d": replaces,
             "worst_clean_by_candidate": {grid[k][0]: clean[k] for k in grid},
             "noisy_mean_by_candidate": {grid[k][0]: noisy[k] for k in grid},
             "overrides": overrides}, table)


def rule_e_report(chosen: dict[str, Any]) -> None:
    e, table = chosen["rule_e"], chosen["rule_e_table"]
    regimes = list(next(iter(table.values())))
    print("\nrule E, val gain over rule D's baseline runs (points; seeds paired), amid:\n")
    print("| amid candidate | " + " | ".join(regimes) + " | worst clean | noisy mean |")
    print("|---|" + "---|" * (len(regimes) + 2))
    for name, row in table.items():
        cells = [f"{v[0]:+.1f} ({v[1]})" for v in row.values()]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {e['worst_clean_by_candidate'][name]:+.1f}"
              f" | {e['noisy_mean_by_candidate'][name]:+.1f} |")
    state = "met" if e["bar_met"] else "NOT met"
    print(f"\nrule E picks {e['setting']!r} (bar {RULE_D_BAR:+.1f} {state}: worst clean "
          f"{e['worst_clean']:+.2f}, noisy-label mean {e['noisy_mean']:+.2f}); it "
          f"{'replaces' if e['replaces_rule_d'] else 'does NOT replace'} rule D's pick "
          f"(worst clean {chosen['rule_d']['worst_clean']:+.2f})")
