"""The distillation study (issue 11): where does the student gain, and why does L_TS hurt.

    python bench/experiments/study.py                      # every part, resumable (~4 h, 2 cores)
    python bench/experiments/study.py --parts curves --datasets demo_noisy
    python bench/experiments/study.py --parts report       # tables, figures, chosen defaults

Datasets (each its own project folder under --work; results in
bench/experiments/results/study_<dataset>.jsonl, one line per run):

- `demo`: the embedded demo with clean annotations (`demo.label_noise=0`).
- `demo_noisy`: the demo as `dvc repro` builds it: 40 % of the training annotations
  name a wrong class (`demo.label_noise=0.4`); the media and validation/test labels
  are those of the true class.
- `weak`: controlled. Target: 8 steps x 32 dims, x_t = 1.2 m_y + n + e_t with a
  per-sample offset n ~ N(0, 0.6^2 I) and per-step noise e_t ~ N(0, I): only the
  time mean carries the label, weakly. Auxiliary: one vector 3.5 m'_y + N(0, I).
  10 classes x 300 (60/20/20). The auxiliary carries what the target lacks.
- `noisy`: controlled. Target: 8 steps, x_t = 2.0 m_y + e_t, e_t ~ N(0, 2.5^2 I):
  every step carries the label, buried in noise, so the student needs many labelled
  samples to average it out. Same auxiliary.

Parts, in order (each needs the ones before it for every dataset):

- `curves`: student Top-1 against labelled training samples per class
  (`dataset.train_per_class`) for the variants in VARIANTS, 5 seeds each.
- `tau`: ts and amid with tau in TAUS (alpha 4), at 8 per class and at all.
- `alpha`: amid with alpha in ALPHAS at the tau the rule picked (the rule reads amid
  only; ts's alpha curves were cut to fit the study into one session).
- `kd`: kd's candidates (KD_GRID: temperature, weight, teacher mode).
- `tune`: rule B's candidates of ts, ts_ta and amid on demo_noisy (tau x teacher mode).
- `verify`: rule A's defaults (ts, ts_ta, amid, kd) at 8 per class and at all; on
  demo_noisy also rule B's.
- `lead`: amid at rule A's defaults with instance-level positives in L_TS / L_TA
  (`methods.amid.positives=instance`), online and with a fixed teacher: the lead
  docs/results.md section 4 follows (not a candidate of the rules).
- `rulec`: rule C's candidates (positives x teacher mode x alpha, amid, at rule A's tau)
  in every regime; `rulec_demo`: rule C part 2 on demo_noisy (rule B's grid x positives);
  `rulec_verify`: rule C's pick and the baseline again on seeds 5-9, which no rule read.
- `ruled`: rule D's candidates (`teacher_pick: best` x teacher epochs x alpha, amid) and
  rule C's pick beside them, with the baseline rerun, in every regime; `ruled_verify`:
  rule D's pick and the baseline on seeds 5-9.
- `rulee`: rule E's candidates (rule D's, with the student training on its CE while the
  teacher pre-trains: `student_waits: false`) on rule D's regimes and seeds.
- `rulef`: rule F's candidates (rule E's, with instance positives), the same way.
- `report`: the tables and figures of docs/results.md and the chosen defaults.

Every setting is the repository's params.yaml with PINS (the method options as they
were before the study, so later defaults do not change what a variant means) and the
overrides listed here, `train.seed` 0-4. Test numbers are the last epoch's; the rules
(study_rules.py) read validation numbers only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml
from _common import REPO, RESULTS, SEEDS, Runner, build_demo, load_results
from study_rule_d import RULE_D_BASELINE, rule_d_grid
from study_rule_e import EXTRA, POSITIVES, rule_e_grid
from study_rules import (
    ALPHAS,
    DEMO,
    DISTILLERS,
    FRESH,
    FRESH_SEEDS,
    KD_GRID,
    LEAD,
    RULE_C_MODES,
    SIZES,
    SMALL,
    TAUS,
    VARIANTS,
    choose,
    label,
    report,
    rule_c_grid,
    tune_grid,
)

DATASETS = ("demo", "demo_noisy", "weak", "noisy")
PINS = [  # the method options before the study (the study's reference point)
    *(f"methods.{m}.{k}={v}" for m in ("ts", "ts_ta", "amid")
      for k, v in (("tau", 0.1), ("alpha", 4.0), ("fixed_teacher", "false"),
                   ("teacher_epochs", 10), ("positives", "class"))),
    "methods.kd.temperature=4.0", "methods.kd.weight=0.5", "methods.kd.fixed_teacher=false",
    "methods.kd.teacher_epochs=10",
    # the demo's length when the study ran (params.yaml's demo now trains 20 epochs)
    "train.epochs=30", "methods.amid.warmup_epochs=5", "methods.amid_recommended.warmup_epochs=5",
]
LABEL_NOISE = {"demo": 0.0, "demo_noisy": 0.4}
CONTROLLED = {  # dataset -> (target signal, per-sample offset, per-step noise)
    "weak": (1.2, 0.6, 1.0),
    "noisy": (2.0, 0.0, 2.5),
}


def make_controlled(work: Path, name: str, n_per_class: int = 300, seed: int = 0) -> Path:
    """Caches, manifest and params.yaml of a controlled dataset in `work`."""
    import pandas as pd

    from amid.cache import write_cache
    from amid.manifest import write_manifest
    from amid.schema import apply_override
    from amid.storage import write_text

    signal, offset, noise = CONTROLLED[name]
    classes, dim, steps = [f"c{k}" for k in range(10)], 32, 8
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(2, len(classes), dim))
    protos /= np.linalg.norm(protos, axis=2, keepdims=True)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    n = len(labels)
    target = (signal * protos[0][labels][:, None, :] + offset * rng.normal(size=(n, 1, dim))
              + noise * rng.normal(size=(n, steps, dim))).astype(np.float32)  # (n, T, D)
    aux = (3.5 * protos[1][labels] + rng.normal(size=(n, dim))).astype(np.float32)  # (n, D)
    split = np.empty(n, dtype=object)
    for k in range(len(classes)):  # stratified 60/20/20
        rows = rng.permutation(np.flatnonzero(labels == k))
        cut = [int(0.6 * len(rows)), int(0.8 * len(rows))]
        split[rows[:cut[0]]], split[rows[cut[0]:cut[1]]], split[rows[cut[1]:]] = \
            "train", "val", "test"
    ids = [f"s{i:05d}" for i in range(n)]
    params = {"signal": signal, "offset": offset, "noise": noise, "seed": seed}
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache" / name
    if not (cache / "audio__synthetic.h5").exists():
        write_cache(cache / "visual__synthetic.h5", ids, list(target),
                    {"modality": "visual", "extractor": "synthetic", "params": params})
        write_cache(cache / "audio__synthetic.h5", ids, [z[None] for z in aux],
                    {"modality": "audio", "extractor": "synthetic", "params": params})
        write_manifest(pd.DataFrame({"sample_id": ids, "label": np.array(classes)[labels],
                                     "split": split}), work / "manifest.csv")
    cfg = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    cfg["dataset"] = {"name": name, "adapter": "csv", "adapter_options": {}, "root": ".",
                      "manifest": "manifest.csv", "cache_dir": "cache",
                      "target": ["visual"], "auxiliary": ["audio"], "fold": None}
    cfg["extract"] = {m: {"extractor": "synthetic", "params": params}
                      for m in ("visual", "audio")}
    cfg["pipeline"]["generate"] = []
    for pin in PINS:
        apply_override(cfg, pin)
    write_text(work / "params.yaml", yaml.safe_dump(cfg, sort_keys=False))
    return work / "params.yaml"


def project(work: Path, name: str) -> Path:
    folder = work / name
    if name in LABEL_NOISE:
        build_demo(folder, [f"demo.label_noise={LABEL_NOISE[name]}", *PINS])
    else:
        make_controlled(folder, name)
    return folder


def _size(size: int | None) -> list[str]:
    return [] if size is None else [f"dataset.train_per_class={size}"]


def curves(runner: Runner, name: str) -> None:
    for size in SIZES[name]:
        for variant, (method, overrides) in VARIANTS.items():
            runner.run(f"{variant} @ {label(size)}", method, [*overrides, *_size(size)],
                       extra={"size": size, "setting": variant})


def _sweep(runner: Runner, method: str, values: dict[str, list[str]], fields: dict) -> None:
    """One stack per size: the settings in `values` (setting -> overrides) x seeds."""
    for size in (SMALL, None):
        runner.run_many(method, [(f"{setting} @ {label(size)}", [*o, *_size(size)],
                                  {"size": size, "setting": setting, **fields.get(setting, {})})
                                 for setting, o in values.items()])


def tau(runner: Runner) -> None:
    for method in ("ts", "amid"):
        _sweep(runner, method, {f"{method}, tau={t}": [f"methods.{method}.tau={t}"]
                                for t in TAUS},
               {f"{method}, tau={t}": {"tau": t} for t in TAUS})


def alpha(runner: Runner, chosen_tau: float) -> None:
    """amid with alpha in ALPHAS at the tau rule A picked (the only alpha the rule reads)."""
    names = {a: f"amid, tau={chosen_tau}, alpha={a}" for a in ALPHAS}
    _sweep(runner, "amid",
           {names[a]: [f"methods.amid.tau={chosen_tau}", f"methods.amid.alpha={a}"]
            for a in ALPHAS},
           {names[a]: {"tau": chosen_tau, "alpha": a} for a in ALPHAS})


def kd(runner: Runner) -> None:
    for online in (True, False):  # a fixed teacher changes the schedule: its own stack
        for epochs in ((10,) if online else (5, 10)):
            _sweep(runner, "kd", {s: o for s, o in KD_GRID.items()
                                  if ("online" in s) == online
                                  and (online or s.endswith(f"after {epochs}"))}, {})


def tune(runner: Runner, alpha_: float, positives: tuple[str, ...] = ("class",)) -> None:
    """Rule B's candidates of ts, ts_ta and amid on the demo, whole training split; rule C
    part 2 adds instance positives (at rule C's alpha)."""
    for method in DISTILLERS:
        for kind in positives:  # positives and a fixed teacher change the step: own stacks
            for fixed in (False, True):
                grid = {s: o for s, o in tune_grid(method, alpha_, kind).items()
                        if ("online" in s) != fixed}
                runner.run_many(method, [(f"{s} @ all", o, {"size": None, "setting": s})
                                         for s, o in grid.items()])


def verify(runner: Runner, name: str, chosen: dict) -> None:
    """The shipped defaults (rule A) where the rules look (8 per class and all), and on
    the demo rule B's choice."""
    settings = {f"{m} (chosen)": (m, o) for m, o in chosen["overrides"].items()}
    if name == DEMO:
        settings |= {f"{m} (demo)": (m, c["overrides"]) for m, c in chosen["demo"].items()}
    for setting, (method, overrides) in settings.items():
        for size in (SMALL, None):
            runner.run(f"{setting} @ {label(size)}", method, [*overrides, *_size(size)],
                       extra={"size": size, "setting": setting})


def lead(runner: Runner, chosen: dict) -> None:
    """amid at rule A's defaults with instance-level positives, online and fixed teacher."""
    for setting, overrides in LEAD.items():
        for size in (SMALL, None):
            runner.run(f"{setting} @ {label(size)}", "amid",
                       [*chosen["overrides"]["amid"], *overrides, *_size(size)],
                       extra={"size": size, "setting": setting})


def rule_c(runner: Runner, chosen: dict) -> None:
    """Rule C, part 1: positives x teacher mode x alpha at rule A's tau, for amid. A
    teacher mode or positives changes the step, not a per-member value: one stack per
    (positives, teacher mode, size), its alphas x seeds as members."""
    grid = rule_c_grid("amid", chosen["tau"])
    for positives, epochs in RULE_C_MODES:
        for size in (SMALL, None):
            runner.run_many("amid", [
                (f"{name} @ {label(size)}", [*o, *_size(size)],
                 {"size": size, "setting": name, "alpha": a})
                for (p, e, a), (name, o) in grid.items() if (p, e) == (positives, epochs)])


def rule_c_verify(runner: Runner, chosen: dict) -> None:
    """Rule C's pick and the baseline on seeds 5-9, which no rule read: does the pick's
    worst regime hold up away from the seeds it was chosen on?"""
    c = chosen["rule_c"]
    for size in (SMALL, None):
        for setting, method, overrides in (
                (f"baseline{FRESH}", "baseline", []),
                (f"{c['setting']}{FRESH}", "amid", c["overrides"]["amid"])):
            runner.run(f"{setting} @ {label(size)}", method, [*overrides, *_size(size)],
                       seeds=FRESH_SEEDS, extra={"size": size, "setting": setting})


def rule_d(runner: Runner, chosen: dict, sizes: tuple = (SMALL, None),
           seeds: tuple = SEEDS, stacks: tuple | None = None) -> None:
    """Rule D: the six candidates and rule C's pick, each (teacher epochs, pick) one stack
    of its alphas x seeds per size; the baseline rerun beside them (the gains' reference).
    `sizes`, `seeds` and `stacks` ("baseline", "best:5", ...: one process per stack on a
    busy machine) cut the grid where time is short (docs/results.md says where)."""
    grid = rule_d_grid("amid", chosen["tau"])
    for size in sizes:
        if stacks is None or "baseline" in stacks:
            runner.run(f"{RULE_D_BASELINE} @ {label(size)}", "baseline", _size(size), seeds,
                       extra={"size": size, "setting": RULE_D_BASELINE})
        for pick, epochs in dict.fromkeys((p, e) for p, e, _ in grid):
            if stacks is not None and f"{pick}:{epochs}" not in stacks:
                continue
            runner.run_many("amid", [
                (f"{name} @ {label(size)}", [*o, *_size(size)],
                 {"size": size, "setting": name, "alpha": a, "teacher_epochs": e,
                  "teacher_pick": p})
                for (p, e, a), (name, o) in grid.items() if (p, e) == (pick, epochs)], seeds)


def rule_d_verify(runner: Runner, chosen: dict, sizes: tuple = (SMALL, None),
                  seeds: tuple = FRESH_SEEDS, rule: str = "rule_d") -> None:
    """A rule's pick (rule D's, or with `rule` a later one's) and the baseline on seeds
    5-9, which no rule read (the baseline's, where rule C's check ran them, are those
    runs)."""
    d = chosen[rule]
    for size in sizes:
        for setting, method, overrides in (
                (f"baseline{FRESH}", "baseline", []),
                (f"{d['setting']}{FRESH}", "amid", d["overrides"]["amid"])):
            runner.run(f"{setting} @ {label(size)}", method, [*overrides, *_size(size)],
                       seeds=seeds, extra={"size": size, "setting": setting})


def rule_e(runner: Runner, chosen: dict, records: list[dict],
           sizes: tuple = (SMALL, None), rule: str = "E") -> None:
    """Rule E (or F): per teacher-epochs value one stack of its alphas x seeds per size,
    on the seeds rule D's baseline ran on at that size (its runs are the gains' reference)."""
    grid = rule_e_grid("amid", chosen["tau"], rule)
    for size in sizes:
        seeds = sorted({r["seed"] for r in records if r.get("setting") == RULE_D_BASELINE
                        and r.get("size") == size})
        for epochs in dict.fromkeys(e for e, _ in grid):
            runner.run_many("amid", [
                (f"{name} @ {label(size)}", [*o, *_size(size)],
                 {"size": size, "setting": name, "alpha": a, "teacher_epochs": e,
                  "teacher_pick": "best", "student_waits": False,
                  "positives": POSITIVES[rule][0], **EXTRA[rule]})
                for (e, a), (name, o) in grid.items() if e == epochs], seeds)


def results_of(names: list[str]) -> dict[str, list[dict]]:
    return {n: load_results(RESULTS / f"study_{n}.jsonl") for n in names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/amid_study"))
    p.add_argument("--parts", default="curves,tau,alpha,kd,tune,verify,lead,rulec,rulec_demo,"
                                      "rulec_verify,ruled,ruled_verify,rulee,rulef,ruleg,ruleg_verify,"
                                      "report")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    p.add_argument("--sizes", default="8,all",
                   help="ruled, ruled_verify, ruleg_verify: the regimes' sizes")
    p.add_argument("--seeds", default="", help="ruled, ruled_verify: seeds (default: "
                                                "0-4, and 5-9 for ruled_verify)")
    p.add_argument("--stacks", default="", help="ruled: only these stacks (baseline, "
                                                 "best:5, best:10, best:15, last:5)")
    args = p.parse_args()
    stacks = tuple(args.stacks.split(",")) if args.stacks else None
    sizes = tuple(None if s == "all" else int(s) for s in args.sizes.split(","))
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    parts = args.parts.split(",")
    names = args.datasets.split(",")
    for part in parts:
        if part == "report":
            report(results_of(list(DATASETS)), args.figures)
            continue
        # the rules read every dataset of the study, whichever this process runs
        chosen = choose(results_of(list(DATASETS))) if part in ("alpha", "tune", "verify",
                                                                "lead", "rulec",
                                                                "rulec_demo",
                                                                "rulec_verify", "ruled",
                                                                "ruled_verify", "rulee",
                                                                "rulef", "ruleg",
                                                                "ruleg_verify") \
            else None
        if part in ("tune", "rulec_demo"):
            names = [DEMO] if DEMO in names else []
        for name in names:
            runner = Runner(project(args.work, name), RESULTS / f"study_{name}.jsonl")
            if part == "curves":
                curves(runner, name)
            elif part == "tau":
                tau(runner)
            elif part == "alpha":
                alpha(runner, chosen["tau"])
            elif part == "kd":
                kd(runner)
            elif part == "tune":
                tune(runner, chosen["alpha"])
            elif part == "verify":
                verify(runner, name, chosen)
            elif part == "lead":
                lead(runner, chosen)
            elif part == "rulec":
                rule_c(runner, chosen)
            elif part == "rulec_demo":  # rule C, part 2
                tune(runner, chosen["rule_c"]["alpha"], ("class", "instance"))
            elif part == "rulec_verify":
                rule_c_verify(runner, chosen)
            elif part == "ruled":
                rule_d(runner, chosen, sizes, seeds or SEEDS, stacks)
            elif part == "ruled_verify":
                rule_d_verify(runner, chosen, sizes, seeds or FRESH_SEEDS)
            elif part == "ruleg_verify":
                rule_d_verify(runner, chosen, sizes, seeds or FRESH_SEEDS, "rule_g")
            elif part in ("rulee", "rulef", "ruleg"):
                rule_e(runner, chosen, load_results(RESULTS / f"study_{name}.jsonl"), sizes,
                       part[-1].upper())
            else:
                p.error(f"--parts: unknown part {part!r}")


if __name__ == "__main__":
    main()
