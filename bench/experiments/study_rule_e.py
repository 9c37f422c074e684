"""Rules E, F and G of docs/results.md (issue 21): the student does not wait.

Each written and committed before its runs. Rule E: rule D's candidates with the
student training on its own CE while the teacher pre-trains (`student_waits:
false`): teacher best of 5 or 15 epochs x alpha 1 or 0.25, class positives.
Rule F: the same four with instance positives (only a sample's own other view
is its positive). Rule G: rule F's four, distilling only from a frozen teacher
that disagrees with at least 10 % of the training labels (`min_disagreement`).
All are read on the regimes, seeds and baseline runs of rule
D's table (study_rule_d.gain_table); the bar is rule D's. If no candidate meets
it, the best of them replaces the preset in force (rule D's pick, unless rule E
replaced it) only if its worst clean-label gain is larger. Validation numbers only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from study_rule_d import CLEAN, RULE_D_BAR, gain_table
from study_rules import DISTILLERS, FRESH, _options, paired_gain_table, tied

RULE_E_EPOCHS = (5, 15)  # ties: fewer first
RULE_E_ALPHAS = (1.0, 0.25)  # then the larger alpha
NOT_WAITING = "student_waits=false"
# rule -> (the L_TS / L_TA positives of its candidates, the tag in their names)
POSITIVES = {"E": ("class", ""), "F": ("instance", ", instance positives"),
             "G": ("instance", ", instance positives, gated at 10 %")}
# rule -> its candidates' options beyond rule E's and their positives
EXTRA = {"E": {}, "F": {}, "G": {"min_disagreement": 0.1}}
RULES = tuple(POSITIVES)  # in the order they were written: each reads the ones before


def _rule_options(method: str, tau: float, alpha: float, epochs: int, rule: str) -> list[str]:
    return [*_options(method, tau, alpha, epochs, POSITIVES[rule][0]),
            f"methods.{method}.teacher_pick=best", f"methods.{method}.{NOT_WAITING}",
            *(f"methods.{method}.{k}={v}" for k, v in EXTRA[rule].items())]


def rule_e_grid(method: str, tau: float, rule: str = "E") -> dict[tuple, tuple[str, list[str]]]:
    """(teacher epochs, alpha) -> (setting name, overrides), in the rule's order."""
    tag = POSITIVES[rule][1]
    return {(e, a): (f"{method} {rule}, not waiting, best of {e}, alpha={a}{tag}",
                     _rule_options(method, tau, a, e, rule))
            for e in RULE_E_EPOCHS for a in RULE_E_ALPHAS}


def choose_e(by_dataset: dict[str, list[dict]], rule_a: dict[str, Any], in_force: dict[str, Any],
             rule: str = "E"
             ) -> tuple[dict[str, Any], dict[str, dict[str, tuple[float, int] | None]]]:
    """The rule's pick, and whether it replaces the preset in force (`replaces`).
    LookupError until every candidate ran in every regime rule D's pick ran in."""
    grid = rule_e_grid("amid", rule_a["tau"], rule)
    table = gain_table(by_dataset, [name for name, _ in grid.values()])
    if any(v is None for row in table.values() for v in row.values()):
        raise LookupError(f"rule {rule}: not every candidate ran in every regime "
                          f"(--parts rule{rule.lower()})")

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
    replaces = bool(admissible) or clean[pick] > in_force["worst_clean"]
    epochs, alpha = pick
    positives = POSITIVES[rule][0]
    overrides = {m: _rule_options(m, rule_a["tau"], alpha, epochs, rule) for m in DISTILLERS}
    return ({"setting": grid[pick][0], "teacher_pick": "best", "teacher_epochs": epochs,
             "alpha": alpha, "positives": positives, "student_waits": False, **EXTRA[rule],
             "bar_met": bool(admissible),
             "admissible": [grid[k][0] for k in admissible], "worst_clean": clean[pick],
             "noisy_mean": noisy[pick], "replaces": replaces,
             "in_force": in_force["setting"],
             "worst_clean_by_candidate": {grid[k][0]: clean[k] for k in grid},
             "noisy_mean_by_candidate": {grid[k][0]: noisy[k] for k in grid},
             "overrides": overrides}, table)


def in_force_after(chosen: dict[str, Any], rule: str) -> dict[str, Any]:
    """The preset in force before `rule` is read: rule D's pick, or a later rule's that
    replaced it."""
    current = chosen["rule_d"]
    for earlier in RULES:
        if earlier == rule:
            return current
        key = f"rule_{earlier.lower()}"
        if key in chosen and chosen[key]["replaces"]:
            current = chosen[key]
    return current


def rule_e_report(chosen: dict[str, Any], rule: str = "E",
                  by_dataset: dict[str, list[dict]] | None = None) -> None:
    key = f"rule_{rule.lower()}"
    e, table = chosen[key], chosen[f"{key}_table"]
    regimes = list(next(iter(table.values())))
    print(f"\nrule {rule}, val gain over rule D's baseline runs (points; seeds paired), "
          "amid:\n")
    print("| amid candidate | " + " | ".join(regimes) + " | worst clean | noisy mean |")
    print("|---|" + "---|" * (len(regimes) + 2))
    for name, row in table.items():
        cells = [f"{v[0]:+.1f} ({v[1]})" for v in row.values()]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {e['worst_clean_by_candidate'][name]:+.1f}"
              f" | {e['noisy_mean_by_candidate'][name]:+.1f} |")
    state = "met" if e["bar_met"] else "NOT met"
    print(f"\nrule {rule} picks {e['setting']!r} (bar {RULE_D_BAR:+.1f} {state}: worst clean "
          f"{e['worst_clean']:+.2f}, noisy-label mean {e['noisy_mean']:+.2f}); it "
          f"{'replaces' if e['replaces'] else 'does NOT replace'} the preset in force, "
          f"{e['in_force']!r}")
    fresh = f"{e['setting']}{FRESH}"  # a changed preset's check on seeds 5-9 (step 5)
    if by_dataset and any(r.get("setting") == fresh for rs in by_dataset.values() for r in rs):
        for split in ("val", "test"):
            print(f"\nrule {rule}'s pick on fresh seeds 5-9, {split} gain over the baseline "
                  "on the same seeds (points, mean ± std):\n")
            print(paired_gain_table(by_dataset, [(fresh, fresh)], split, f"baseline{FRESH}"))
