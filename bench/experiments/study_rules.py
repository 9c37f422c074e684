"""The study's settings, its rules for choosing defaults (validation only), tables, figures.

The rules are those written in docs/results.md ("How the defaults are chosen")
before any choice was made; `choose` applies them to the recorded runs. A
regime is a dataset of the study at 8 labelled training samples per class or at
its whole training split. The gain of a setting in a regime is its student's
validation Top-1 minus the baseline's, paired by seed, averaged over the 5 seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, mean_std

from amid.storage import write_json

SIZES = {"demo": (4, 8, 16, None), "demo_noisy": (4, 8, 16, None),
         "weak": (4, 8, 16, 32, 64, None), "noisy": (4, 8, 16, None)}
LEAD = {  # the fidelity lead (docs/results.md section 4): L_TS / L_TA with P(i) = {i}
    "amid, instance positives": ["methods.amid.positives=instance"],
    "amid, instance positives, fixed teacher": [
        "methods.amid.positives=instance", "methods.amid.fixed_teacher=true",
        "methods.amid.teacher_epochs=5"],
}
SMALL = 8  # the small end of every sweep; None is the whole training split
VARIANTS = {  # curves: variant -> (method, overrides); every option else as pinned
    "baseline": ("baseline", []),
    "teacher": ("teacher", []),
    "kd": ("kd", []),
    "kd, fixed teacher": ("kd", ["methods.kd.fixed_teacher=true",
                                 "methods.kd.teacher_epochs=5"]),
    "ts, alpha=0": ("ts", ["methods.ts.alpha=0"]),
    "ts": ("ts", []),
    "ts_ta": ("ts_ta", []),
    "amid": ("amid", []),
    "amid, fixed teacher": ("amid", ["methods.amid.fixed_teacher=true",
                                     "methods.amid.teacher_epochs=5"]),
    "ccl": ("ccl", []),
    "crd": ("crd", []),
    "gmc": ("gmc", []),
    "crcd": ("crcd", []),
}
TAUS = (0.05, 0.1, 0.2, 0.5, 1.0)
ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
PAPER_ALPHA = 4.0


def _mode(epochs: int | None) -> str:
    return "online" if epochs is None else f"fixed after {epochs}"


def _kd_name(t: float, w: float, epochs: int | None) -> str:
    return f"kd, T={t}, weight={w}, {_mode(epochs)}"


KD_GRID = {  # the candidates in the rule's order of preference (the old default first)
    _kd_name(t, w, e): [f"methods.kd.temperature={t}", f"methods.kd.weight={w}",
                        f"methods.kd.fixed_teacher={e is not None}",
                        f"methods.kd.teacher_epochs={e or 10}"]
    for e in (None, 10, 5) for t in (4.0, 2.0) for w in (0.5, 0.9)
}
DISTILLERS = ("ts", "ts_ta", "amid")  # the methods that share tau and alpha
DEMO = "demo_noisy"  # the regime `dvc repro` runs (rule B)


def _options(method: str, tau: float, alpha: float, epochs: int | None,
             positives: str) -> list[str]:
    return [f"methods.{method}.tau={tau}", f"methods.{method}.alpha={alpha}",
            f"methods.{method}.fixed_teacher={epochs is not None}",
            f"methods.{method}.teacher_epochs={epochs or 10}",
            f"methods.{method}.positives={positives}"]


def tune_grid(method: str, alpha: float, positives: str = "class") -> dict[str, list[str]]:
    """Rule B's candidates of ts / ts_ta / amid: tau x teacher mode, at rule A's alpha;
    rule C adds the same grid with instance positives (class keeps rule B's names)."""
    tag = "" if positives == "class" else f", {positives} positives"
    return {f"{method}, tau={t}, alpha={alpha}, {_mode(e)}{tag}":
            _options(method, t, alpha, e, positives) for e in (None, 5) for t in TAUS}


FRESH = " (seeds 5-9)"  # a check of rule C's pick on seeds the rule never read
FRESH_SEEDS = (5, 6, 7, 8, 9)
# Rule C, part 1: positives x teacher mode (the rule's order of preference) x alpha
RULE_C_MODES = (("class", None), ("instance", None), ("class", 5), ("instance", 5))
RULE_C_ALPHAS = (4.0, 1.0, 0.25)  # the paper's first; the rest must beat it by s


def rule_c_grid(method: str, tau: float) -> dict[tuple, tuple[str, list[str]]]:
    """(positives, teacher epochs or None, alpha) -> (setting name, overrides), in the
    rule's order: alpha descending, then RULE_C_MODES."""
    return {(p, e, a): (f"{method} C, {p} positives, {_mode(e)}, alpha={a}",
                        _options(method, tau, a, e, p))
            for a in RULE_C_ALPHAS for p, e in RULE_C_MODES}


TIE = 0.5  # points: candidates this close to the best count as tied (inclusive)


def tied(value: float, best: float) -> bool:
    """Within TIE of the best, inclusive. Gains are means of accuracy differences, so a
    gap of exactly 0.5 points happens, and float rounding must not decide it."""
    return round(best - value, 9) <= TIE


def label(size: int | None) -> str:
    return "all" if size is None else f"{size}/class"


def select(records: list[dict], setting: str, size: int | None) -> list[dict]:
    return [r for r in records if r.get("setting") == setting and r.get("size") == size
            and r["error"] is None]


def gain(records: list[dict], setting: str, size: int | None, split: str = "val",
         baseline: str = "baseline") -> tuple[float, float] | None:
    """(setting - baseline) student Top-1 on `split` in points, paired by seed: the
    mean over seeds and the std of the paired difference; None if nothing recorded."""
    key = f"{split}_student_top1"
    base = {r["seed"]: r[key] for r in select(records, baseline, size)}
    mine = {r["seed"]: r[key] for r in select(records, setting, size)}
    diffs = [100 * (mine[s] - base[s]) for s in mine if s in base]
    if not diffs:
        return None
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def worst_gains(by_dataset: dict[str, list[dict]], settings: dict[Any, str],
                baseline: str = "baseline"
                ) -> tuple[dict[Any, float], dict[Any, dict[str, float]]]:
    """For each candidate (key -> setting name): its smallest gain over the regimes, and
    every regime's gain (against `baseline`, paired by seed). A candidate missing in any
    regime is an error: the rule needs all."""
    table: dict[Any, dict[str, float]] = {}
    for key, setting in settings.items():
        for name, records in by_dataset.items():
            for size in (SMALL, None):
                g = gain(records, setting, size, baseline=baseline)
                if g is None:
                    raise LookupError(f"{setting!r} has no runs on {name} @ {label(size)}: "
                                      "run the study's earlier parts first")
                table.setdefault(key, {})[f"{name} @ {label(size)}"] = g[0]
    return {k: min(v.values()) for k, v in table.items()}, table


def seed_std(by_dataset: dict[str, list[dict]]) -> float:
    """One seed standard deviation: the baseline's validation Top-1 std over seeds,
    averaged over the regimes (points)."""
    stds = [mean_std(r["val_student_top1"] for r in select(records, "baseline", size))[1]
            for records in by_dataset.values() for size in (SMALL, None)]
    return float(np.mean(stds))


def choose(by_dataset: dict[str, list[dict]]) -> dict[str, Any]:
    """The rules of docs/results.md. Returns what is decided so far (tau first, then
    alpha at that tau, then kd), each with the table it was decided on."""
    out: dict[str, Any] = {"seed_std": seed_std(by_dataset)}
    worst, table = worst_gains(by_dataset, {t: f"amid, tau={t}" for t in TAUS})
    best = max(worst.values())
    out["tau"] = max(t for t, w in worst.items() if tied(w, best))  # ties: the larger
    out["tau_table"] = table
    try:
        worst, table = worst_gains(by_dataset, {a: f"amid, tau={out['tau']}, alpha={a}"
                                                for a in ALPHAS})
    except LookupError:
        return out
    challenger = max(worst, key=worst.get)
    strong = worst[challenger] - worst[PAPER_ALPHA] > out["seed_std"]
    out["alpha"] = challenger if strong else PAPER_ALPHA
    out["alpha_table"] = table
    try:
        worst, table = worst_gains(by_dataset, dict(zip(KD_GRID, KD_GRID, strict=True)))
    except LookupError:
        return out
    best = max(worst.values())
    out["kd"] = next(k for k in KD_GRID if tied(worst[k], best))  # ties: the earlier
    out["kd_table"] = table
    out["overrides"] = {
        **{m: [f"methods.{m}.tau={out['tau']}", f"methods.{m}.alpha={out['alpha']}"]
           for m in DISTILLERS},
        "kd": KD_GRID[out["kd"]],
    }
    demo = choose_demo(by_dataset[DEMO], out)
    if demo is not None:
        out["demo"], out["demo_table"] = demo
    try:
        out["rule_c"], out["rule_c_table"] = choose_c(by_dataset, out)
    except LookupError:
        return out
    demo = choose_demo(by_dataset[DEMO], out, rule_c=True)
    if demo is not None:
        out["demo_c"], out["demo_c_table"] = demo
    from study_rule_d import choose_d  # rule D reads what this module decides

    try:
        out["rule_d"], out["rule_d_table"] = choose_d(by_dataset, out)
    except LookupError:
        return out
    from study_rule_e import RULES, choose_e, in_force_after  # rules E-G read rule D's pick

    for rule in RULES:
        key = f"rule_{rule.lower()}"
        try:
            out[key], out[f"{key}_table"] = choose_e(by_dataset, out,
                                                     in_force_after(out, rule), rule)
        except LookupError:
            return out
    return out


def choose_c(by_dataset: dict[str, list[dict]], rule_a: dict[str, Any]
             ) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Rule C, part 1: the shipped positives, teacher mode and alpha (read on amid)."""
    grid = rule_c_grid("amid", rule_a["tau"])
    worst, table = worst_gains(by_dataset, {grid[k][0]: grid[k][0] for k in grid})
    score = {k: worst[grid[k][0]] for k in grid}
    paper = [k for k in grid if k[2] == PAPER_ALPHA]
    best = max(score[k] for k in paper)
    pick = next(k for k in paper if tied(score[k], best))
    strong = [k for k in grid if k[2] != PAPER_ALPHA
              and score[k] - score[pick] > rule_a["seed_std"]]
    if strong:  # the paper's alpha yields only to strong evidence
        best = max(score[k] for k in strong)
        pick = next(k for k in strong if tied(score[k], best))
    positives, epochs, alpha = pick
    return ({"setting": grid[pick][0], "positives": positives, "teacher_epochs": epochs,
             "alpha": alpha, "worst": score[pick],
             "overrides": {m: rule_c_grid(m, rule_a["tau"])[pick][1] for m in DISTILLERS}},
            table)


def choose_demo(records: list[dict], rule_a: dict[str, Any], rule_c: bool = False
                ) -> tuple[dict[str, Any], dict[str, dict[str, float]]] | None:
    """Rule B on `records` (demo_noisy) at the whole training split: per method, the
    candidate with the largest gain; ties go to rule A's choice, else the earlier. With
    `rule_c`, rule C part 2: positives join the grid, at rule C's alpha, and ties go to
    rule B's choice."""
    grids = {} if rule_c else {"kd": (KD_GRID, rule_a["kd"])}
    for m in DISTILLERS:
        if rule_c:
            alpha = rule_a["rule_c"]["alpha"]
            grid = {**tune_grid(m, alpha), **tune_grid(m, alpha, "instance")}
            grids[m] = (grid, rule_a["demo"][m]["setting"])
        else:
            grid = tune_grid(m, rule_a["alpha"])
            grids[m] = (grid, f"{m}, tau={rule_a['tau']}, alpha={rule_a['alpha']}, online")
    chosen: dict[str, Any] = {}
    table: dict[str, dict[str, float]] = {}
    for method, (grid, default) in grids.items():
        gains = {c: gain(records, c, None) for c in grid}
        if any(g is None for g in gains.values()):
            return None
        table[method] = {c: g[0] for c, g in gains.items()}
        best = max(table[method].values())
        ties = [c for c in grid if tied(table[method][c], best)]
        pick = default if default in ties else ties[0]
        chosen[method] = {"setting": pick, "overrides": grid[pick]}
    return chosen, table


# ------------------------------------------------------------------ report


def curve_table(records: list[dict], name: str, variants: list[str]) -> str:
    sizes = SIZES[name]
    lines = ["| method | " + " | ".join(label(s) for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for variant in variants:
        key = "test_teacher_top1" if variant == "teacher" else "test_student_top1"
        cells = []
        for size in sizes:
            st = mean_std(r[key] for r in select(records, variant, size))
            cells.append("-" if st is None else f"{st[0]:.1f} ± {st[1]:.1f}")
        name_ = "teacher (its own Top-1)" if variant == "teacher" else variant
        lines.append(f"| {name_} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gain_table(table: dict[Any, dict[str, float]], what: str) -> str:
    regimes = list(next(iter(table.values())))
    lines = [f"| {what} | " + " | ".join(regimes) + " | worst |",
             "|---|" + "---|" * (len(regimes) + 1)]
    for key, gains in table.items():
        lines.append(f"| {key} | " + " | ".join(f"{gains[r]:+.1f}" for r in regimes)
                     + f" | {min(gains.values()):+.1f} |")
    return "\n".join(lines)


def paired_gain_table(by_dataset: dict[str, list[dict]], rows: list[tuple[str, str]],
                      split: str = "val", baseline: str = "baseline") -> str:
    """(row label, setting) -> validation gain over the baseline in each regime, mean ± std
    of the seed-paired difference."""
    regimes = [(n, s) for n in by_dataset for s in (SMALL, None)]
    lines = ["| setting | " + " | ".join(f"{n} @ {label(s)}" for n, s in regimes) + " |",
             "|---|" + "---|" * len(regimes)]
    for text, setting in rows:
        cells = [gain(by_dataset[n], setting, s, split, baseline) for n, s in regimes]
        lines.append(f"| {text} | " + " | ".join(
            "-" if g is None else f"{g[0]:+.1f} ± {g[1]:.1f}" for g in cells) + " |")
    return "\n".join(lines)


DIAGNOSED = ("baseline", "ts, alpha=0", "ts", "ts, tau=1.0", "amid", "amid, fixed teacher",
             "kd, fixed teacher", "crd", "gmc")


def diagnostics_table(by_dataset: dict[str, list[dict]]) -> str:
    """Per regime and variant: train / val accuracy of student and teacher (last epoch)
    and the gradient norm of the student's CE and of L_TS into the student encoder,
    first epoch -> last (the runs' dvclive `grad_<term>`), means over the seeds."""
    def pct(rows: list[dict], key: str) -> str:
        st = mean_std(r[key] for r in rows)
        return "-" if st is None else f"{st[0]:.1f}"

    def grad(rows: list[dict], term: str) -> str:
        curves = [r["grads"][term] for r in rows if term in r["grads"]]
        if not curves:
            return "-"
        first, last = np.mean([c[0] for c in curves]), np.mean([c[-1] for c in curves])
        return f"{first:.2f} → {last:.2f}" if first > 0 else f"- → {last:.2f}"

    lines = ["| regime | variant | student train | student val | teacher train | teacher val "
             "| grad CE into student, epoch 1 → last | grad L_TS, epoch 1 → last |",
             "|---|---|---|---|---|---|---|---|"]
    for name, size in (("demo", SMALL), ("demo_noisy", None), ("weak", SMALL),
                       ("noisy", SMALL)):
        for variant in DIAGNOSED:
            rows = select(by_dataset.get(name, []), variant, size)
            if rows:
                lines.append(f"| {name} @ {label(size)} | {variant} | "
                             + " | ".join(pct(rows, f"{k}_top1") for k in (
                                 "train_student", "val_student", "train_teacher",
                                 "val_teacher"))
                             + f" | {grad(rows, 'grad_cls_student')} | {grad(rows, 'grad_ts')} |")
    return "\n".join(lines)


LEAD_ROWS = [("amid at rule A's defaults (class positives, online)", "amid (chosen)"),
             ("amid, class positives, teacher frozen after 5 (tau 0.1)", "amid, fixed teacher"),
             ("amid, instance positives, online", "amid, instance positives"),
             ("amid, instance positives, teacher frozen after 5",
              "amid, instance positives, fixed teacher"),
             ("kd, teacher frozen after 5 (T 4, weight 0.5)", "kd, fixed teacher"),
             ("crd (its frozen teacher)", "crd"), ("gmc", "gmc")]


def report(by_dataset: dict[str, list[dict]], out: Path) -> dict[str, Any]:
    chosen = choose(by_dataset)
    shown = [*VARIANTS, *(f"{m} ({w})" for w in ("chosen", "demo") for m in ("kd", *DISTILLERS)),
             *LEAD]
    for name, records in by_dataset.items():
        print(f"\n### {name}: student test Top-1 (mean ± std over 5 seeds)\n")
        print(curve_table(records, name, [v for v in shown
                                          if any(r.get("setting") == v for r in records)]))
    for key, what in (("tau_table", "amid, tau (alpha 4)"), ("alpha_table", "amid, alpha"),
                      ("kd_table", "kd candidate")):
        if key in chosen:
            print(f"\nval gain over baseline (points), {what}:\n")
            print(gain_table(chosen[key], what))
    print("\ndiagnostics (section 3):\n")
    print(diagnostics_table(by_dataset))
    print("\nval gain over baseline (points, mean ± std), the lead (section 4):\n")
    print(paired_gain_table(by_dataset, LEAD_ROWS))
    if "overrides" in chosen:
        print("\nval gain over baseline (points, mean ± std), the shipped defaults:\n")
        print(paired_gain_table(by_dataset, [(m, f"{m} (chosen)") for m in chosen["overrides"]]))
    if "demo_table" in chosen:
        for method, gains in chosen["demo_table"].items():
            print(f"\nrule B, {method} on {DEMO} @ all, val gain over baseline (points):")
            for setting, g in gains.items():
                print(f"  {setting:50s} {g:+6.1f}")
    if "rule_c_table" in chosen:
        c = chosen["rule_c"]
        print("\nrule C, val gain over baseline (points), amid at tau "
              f"{chosen['tau']}:\n")
        print(gain_table(chosen["rule_c_table"], "amid candidate"))
        print(f"\nrule C picks {c['setting']!r}; mean ± std of the paired difference:\n")
        print(paired_gain_table(by_dataset, [(c["setting"], c["setting"])]))
        fresh = f"{c['setting']}{FRESH}"
        for split in ("val", "test"):
            print(f"\nrule C's pick on fresh seeds 5-9, {split} gain over the baseline on "
                  "the same seeds (points, mean ± std):\n")
            print(paired_gain_table(by_dataset, [(fresh, fresh)], split, f"baseline{FRESH}"))
    if "demo_c_table" in chosen:
        for method, gains in chosen["demo_c_table"].items():
            print(f"\nrule C part 2, {method} on {DEMO} @ all, val gain over baseline:")
            for setting, g in gains.items():
                mark = "  <- picked" if setting == chosen["demo_c"][method]["setting"] else ""
                print(f"  {setting:60s} {g:+6.1f}{mark}")
    if "rule_d_table" in chosen:
        from study_rule_d import rule_d_report

        rule_d_report(by_dataset, chosen)
    from study_rule_e import RULES, rule_e_report

    for rule in RULES:
        if f"rule_{rule.lower()}_table" in chosen:
            rule_e_report(chosen, rule, by_dataset)
    summary = {k: v for k, v in chosen.items() if not k.endswith("_table")}
    print("\nchosen:", json.dumps(summary))
    write_json(RESULTS / "chosen.json", chosen)
    from study_figures import draw

    print("figures:", ", ".join(map(str, draw(by_dataset, chosen, out))))
    return chosen
