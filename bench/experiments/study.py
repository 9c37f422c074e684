"""The distillation study (issue 11): where does the student gain, and why does L_TS hurt.

    python bench/experiments/study.py                       # everything, resumable (~1 h, 2 cores)
    python bench/experiments/study.py --parts curves --datasets demo
    python bench/experiments/study.py --parts report        # tables and figures from the results

Datasets (each its own project folder under --work; results in
bench/experiments/results/study_<dataset>.jsonl, one line per run):

- `demo`: the embedded demo as `dvc repro` builds it (params.yaml's demo section).
- `weak`: controlled. Target: 8 steps x 32 dims, x_t = 1.2 m_y + n + e_t with a
  per-sample offset n ~ N(0, 0.6^2 I) and per-step noise e_t ~ N(0, I): only the
  time mean carries the label, weakly. Auxiliary: one vector 3.5 m'_y + N(0, I).
  10 classes x 300 (60/20/20). The auxiliary carries what the target lacks.
- `noisy`: controlled, the issue's regime. Target: 8 steps, x_t = 2.0 m_y + e_t,
  e_t ~ N(0, 2.5^2 I): every step carries the label, buried in noise, so the
  student needs many labelled samples to average it out. Same auxiliary.

Parts:

- `curves`: student Top-1 against labelled training samples per class
  (`dataset.train_per_class` 4, 8, 16, 32, 64, all) for baseline, teacher, kd,
  ts with alpha 0, ts, ts_ta, amid and ccl, 5 seeds each (one stack per setting).
- `sensitivity`: ts with tau in TAUS (alpha 4) and alpha in ALPHAS (at tau 0.1
  and at tau 0.5), and kd's temperature, weight and teacher mode, at 8 per class
  and at all, 5 seeds each.
- `report`: the tables and figures of docs/results.md, and the defaults picked
  by the rule stated there (validation data only).

Every setting is the repository's params.yaml with the overrides listed here
(a `--set` each), `train.seed` 0-4. Test numbers are the last epoch's; nothing
is picked on test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _common import REPO, RESULTS, SEEDS, Runner, build_demo, load_results, mean_std

DATASETS = ("demo", "weak", "noisy")
SIZES = {"demo": (4, 8, 16, None), "weak": (4, 8, 16, 32, 64, None),
         "noisy": (4, 8, 16, 32, 64, None)}  # None: the whole training split
SMALL = 8  # the small end of the sensitivity study
METHODS = {  # variant -> (method, overrides)
    "baseline": ("baseline", []),
    "teacher": ("teacher", []),
    "kd": ("kd", []),
    "ts, alpha=0": ("ts", ["methods.ts.alpha=0"]),
    "ts": ("ts", []),
    "ts_ta": ("ts_ta", []),
    "amid": ("amid", []),
    "ccl": ("ccl", []),
}
TAUS = (0.05, 0.1, 0.2, 0.5, 1.0)
ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
KD_GRID = {f"kd, T={t}, weight={w}, {mode}": [f"methods.kd.temperature={t}",
                                             f"methods.kd.weight={w}",
                                             f"methods.kd.fixed_teacher={mode == 'fixed'}"]
           for mode in ("online", "fixed") for t in (2.0, 4.0) for w in (0.5, 0.9)}
CONTROLLED = {  # dataset -> (target signal, per-sample offset, per-step noise)
    "weak": (1.2, 0.6, 1.0),
    "noisy": (2.0, 0.0, 2.5),
}


def make_controlled(work: Path, name: str, n_per_class: int = 300, seed: int = 0) -> Path:
    """Caches, manifest and params.yaml of a controlled dataset in `work`."""
    import pandas as pd

    from amid.cache import write_cache
    from amid.manifest import write_manifest

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
    (work / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return work / "params.yaml"


def project(work: Path, name: str) -> Path:
    folder = work / name
    if name == "demo":
        build_demo(folder)
    else:
        make_controlled(folder, name)
    return folder


def _size(size: int | None) -> list[str]:
    return [] if size is None else [f"dataset.train_per_class={size}"]


def _label(size: int | None) -> str:
    return "all" if size is None else f"{size}/class"


def curves(runner: Runner, name: str) -> None:
    for size in SIZES[name]:
        for variant, (method, overrides) in METHODS.items():
            runner.run(f"{variant} @ {_label(size)}", method, [*overrides, *_size(size)],
                       extra={"size": size, "setting": variant})


def sensitivity(runner: Runner, name: str) -> None:
    for size in (SMALL, None):
        extra = {"size": size}
        runner.run_many("ts", [(f"ts, tau={t} @ {_label(size)}",
                                [f"methods.ts.tau={t}", *_size(size)],
                                extra | {"setting": f"ts, tau={t}", "tau": t})
                               for t in TAUS])
        for tau in (0.1, 0.5):
            runner.run_many("ts", [(f"ts, tau={tau}, alpha={a} @ {_label(size)}",
                                    [f"methods.ts.tau={tau}", f"methods.ts.alpha={a}",
                                     *_size(size)],
                                    extra | {"setting": f"ts, tau={tau}, alpha={a}",
                                             "tau": tau, "alpha": a})
                                   for a in ALPHAS])
        for mode in ("online", "fixed"):
            runner.run_many("kd", [(f"{v} @ {_label(size)}", [*o, *_size(size)],
                                    extra | {"setting": v})
                                   for v, o in KD_GRID.items() if v.endswith(mode)])


# ------------------------------------------------------------------ report


def _stat(rows: list[dict], key: str) -> tuple[float, float, int] | None:
    return mean_std(r[key] for r in rows)


def _select(records: list[dict], setting: str, size: int | None) -> list[dict]:
    return [r for r in records if r.get("setting") == setting and r.get("size") == size
            and r["error"] is None]


def curve_table(records: list[dict], name: str) -> str:
    sizes = SIZES[name]
    head = "| method | " + " | ".join(_label(s) for s in sizes) + " |"
    lines = [head, "|---|" + "---|" * len(sizes)]
    for variant in METHODS:
        key = "test_teacher_top1" if variant == "teacher" else "test_student_top1"
        cells = []
        for size in sizes:
            st = _stat(_select(records, variant, size), key)
            cells.append("-" if st is None else f"{st[0]:.1f} ± {st[1]:.1f}")
        label = "teacher (its own accuracy)" if variant == "teacher" else variant
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gain(records: list[dict], setting: str, size: int | None, split: str = "val"
         ) -> tuple[float, float] | None:
    """Mean over seeds of (setting - baseline) student Top-1 on `split`, paired by seed,
    in points, and the std of that paired difference."""
    key = f"{split}_student_top1"
    base = {r["seed"]: r[key] for r in _select(records, "baseline", size)}
    mine = {r["seed"]: r[key] for r in _select(records, setting, size)}
    diffs = [100 * (mine[s] - base[s]) for s in mine if s in base]
    if not diffs:
        return None
    return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0


def pick_tau(by_dataset: dict[str, list[dict]]) -> tuple[float, dict]:
    """The rule of docs/results.md: the tau whose worst validation gain over the regimes
    (dataset x {8/class, all}) is largest; within 0.5 points, the larger tau."""
    table: dict[float, dict[str, float]] = {}
    for tau in TAUS:
        for name, records in by_dataset.items():
            for size in (SMALL, None):
                g = gain(records, f"ts, tau={tau}", size)
                if g is not None:
                    table.setdefault(tau, {})[f"{name} @ {_label(size)}"] = g[0]
    worst = {tau: min(v.values()) for tau, v in table.items() if v}
    best = max(worst.values())
    chosen = max(t for t, w in worst.items() if w >= best - 0.5)
    return chosen, {"gains": table, "worst": worst}


def figures(by_dataset: dict[str, list[dict]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, len(by_dataset), figsize=(5 * len(by_dataset), 4), squeeze=False)
    for ax, (name, records) in zip(axes[0], by_dataset.items(), strict=True):
        sizes = SIZES[name]
        xs = np.arange(len(sizes))
        for variant in METHODS:
            if variant == "teacher":
                continue
            stats = [_stat(_select(records, variant, s), "test_student_top1") for s in sizes]
            if not any(stats):
                continue
            ys = [st[0] if st else np.nan for st in stats]
            es = [st[1] if st else 0 for st in stats]
            ax.errorbar(xs, ys, yerr=es, label=variant, capsize=2, marker="o", markersize=3)
        ax.set_xticks(xs, [_label(s) for s in sizes], fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("labelled training samples")
        ax.set_ylabel("student test Top-1 (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(2, len(by_dataset), figsize=(5 * len(by_dataset), 7),
                             squeeze=False)
    for col, (name, records) in enumerate(by_dataset.items()):
        for size, style in ((SMALL, "-o"), (None, "--s")):
            g = [gain(records, f"ts, tau={t}", size) for t in TAUS]
            axes[0][col].errorbar(TAUS, [x[0] if x else np.nan for x in g],
                                  yerr=[x[1] if x else 0 for x in g], fmt=style, capsize=2,
                                  label=_label(size))
            for tau in (0.1, 0.5):
                g = [gain(records, f"ts, tau={tau}, alpha={a}", size) for a in ALPHAS]
                axes[1][col].errorbar(ALPHAS, [x[0] if x else np.nan for x in g],
                                      yerr=[x[1] if x else 0 for x in g], fmt=style,
                                      capsize=2, label=f"tau {tau}, {_label(size)}")
        for row, xlabel in ((0, "tau (alpha = 4)"), (1, "alpha")):
            ax = axes[row][col]
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("ts - baseline, student val Top-1 (points)")
            ax.set_title(name)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "tau_alpha.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def report(by_dataset: dict[str, list[dict]], out: Path) -> dict[str, Any]:
    for name, records in by_dataset.items():
        print(f"\n### {name}: student test Top-1 (mean ± std over seeds)\n")
        print(curve_table(records, name))
        for size in (SMALL, None):
            print(f"\n{name} @ {_label(size)}, val gain over baseline (points, paired by seed):")
            rows = [f"ts, tau={t}" for t in TAUS] + list(KD_GRID)
            for setting in [*METHODS, *rows]:
                g = gain(records, setting, size)
                if g is not None and setting != "baseline":
                    print(f"  {setting:40s} {g[0]:+6.1f} ± {g[1]:.1f}")
    chosen, why = pick_tau(by_dataset)
    print(f"\nrule: tau = {chosen}; worst val gain per candidate: "
          f"{json.dumps({str(k): round(v, 2) for k, v in why['worst'].items()})}")
    written = figures(by_dataset, out)
    print("figures:", ", ".join(map(str, written)))
    return {"tau": chosen, **why}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/amid_study"))
    p.add_argument("--parts", default="curves,sensitivity,report")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    p.add_argument("--seeds", type=int, default=len(SEEDS))
    args = p.parse_args()
    parts = set(args.parts.split(","))
    names = args.datasets.split(",")
    for name in names:
        if parts & {"curves", "sensitivity"}:
            runner = Runner(project(args.work, name), RESULTS / f"study_{name}.jsonl")
            if "curves" in parts:
                curves(runner, name)
            if "sensitivity" in parts:
                sensitivity(runner, name)
    if "report" in parts:
        report({n: load_results(RESULTS / f"study_{n}.jsonl") for n in names}, args.figures)


if __name__ == "__main__":
    main()
