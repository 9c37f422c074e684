"""A controlled dataset where the auxiliary modality knows the label much better than the target.

    python bench/experiments/controlled.py [--work /tmp/amid_exp/controlled] [--parts main sweep]

The data (written straight as DESIGN 3.2 caches plus a manifest, no media):
10 classes, `n_per_class` samples each (default 300: 60 % train, 20 % val, 20 % test,
stratified). Each class k has a unit prototype m_k in R^32 for the target and an
independent one m'_k for the auxiliary.

- target `visual`: a sequence of 8 steps, x_t = A m_y + n + e_t with a per-sample offset
  n ~ N(0, S^2 I) and per-step noise e_t ~ N(0, I). Only the time mean carries the label,
  weakly (A = 1.2, S = 0.6: a logistic regression on the mean reaches about 57 %).
- auxiliary `audio`: one clip-level vector z = B m'_y + N(0, I) (B = 3.5: about 90 %).

Part `main` trains baseline, teacher, ts, ts_ta, amid with the repository's defaults
(only the dataset section differs), seeds 0-2. Part `sweep` tries a few settings on the
VALIDATION split (tau, alpha, epochs) for baseline, ts_ta and amid; for each method the
setting with the best mean validation student accuracy is the one whose test numbers
count. A logistic-regression reference on each modality (mean of the target sequence)
is printed too. Results: bench/experiments/results/controlled.jsonl (rerun resumes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _common import (
    MAIN_METHODS,
    REPO,
    RESULTS,
    SEEDS,
    Runner,
    load_results,
    mean_std,
    per_seed,
    table,
)
from demo_seeds import findings

CLASSES = [f"c{k}" for k in range(10)]
DIM, STEPS = 32, 8
TARGET_SIGNAL, TARGET_OFFSET, AUX_SIGNAL = 1.2, 0.6, 3.5
SWEEP = {  # setting name -> overrides; every one is also compared on validation
    "epochs=15": ["train.epochs=15"],
    "tau=0.5": ["train.loss.tau=0.5"],
    "alpha=1": ["train.loss.alpha=1.0"],
}
SWEEP_METHODS = {"baseline": ["epochs=15"], "ts_ta": list(SWEEP), "amid": list(SWEEP)}


def make_dataset(work: Path, n_per_class: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Write caches, manifest and params.yaml into `work`; return the arrays for references."""
    from amid.cache import write_cache
    from amid.manifest import write_manifest

    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(2, len(CLASSES), DIM))
    protos /= np.linalg.norm(protos, axis=2, keepdims=True)
    labels = np.repeat(np.arange(len(CLASSES)), n_per_class)
    n = len(labels)
    target = (TARGET_SIGNAL * protos[0][labels][:, None, :]
              + TARGET_OFFSET * rng.normal(size=(n, 1, DIM))
              + rng.normal(size=(n, STEPS, DIM))).astype(np.float32)  # (n, T, D)
    aux = (AUX_SIGNAL * protos[1][labels] + rng.normal(size=(n, DIM))).astype(np.float32)
    split = np.empty(n, dtype=object)
    for k in range(len(CLASSES)):  # stratified 60/20/20
        rows = rng.permutation(np.flatnonzero(labels == k))
        cut = [int(0.6 * len(rows)), int(0.8 * len(rows))]
        split[rows[:cut[0]]], split[rows[cut[0]:cut[1]]], split[rows[cut[1]:]] = \
            "train", "val", "test"
    ids = [f"s{i:05d}" for i in range(n)]
    params = {"signal": TARGET_SIGNAL, "offset": TARGET_OFFSET, "aux_signal": AUX_SIGNAL,
              "seed": seed, "n_per_class": n_per_class}
    write_cache(work / "cache/controlled/visual__synthetic.h5", ids, list(target),
                {"modality": "visual", "extractor": "synthetic", "params": params})
    write_cache(work / "cache/controlled/audio__synthetic.h5", ids, [z[None] for z in aux],
                {"modality": "audio", "extractor": "synthetic", "params": params})
    write_manifest(pd.DataFrame({"sample_id": ids, "label": np.array(CLASSES)[labels],
                                 "split": split}), work / "data/manifests/controlled.csv")
    cfg = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    cfg["dataset"] = {"name": "controlled", "adapter": "csv", "adapter_options": {},
                      "root": "data", "manifest": "data/manifests/controlled.csv",
                      "cache_dir": "cache", "target": ["visual"], "auxiliary": ["audio"],
                      "fold": None}
    cfg["extract"] = {m: {"extractor": "synthetic", "params": {}} for m in ("visual", "audio")}
    (work / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return {"target": target, "aux": aux, "labels": labels, "split": split.astype(str)}


def references(arrays: dict[str, np.ndarray]) -> str:
    """Logistic regression (standardised inputs) on each modality: what the data allows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y, split = arrays["labels"], arrays["split"]
    views = {"target (time mean)": arrays["target"].mean(axis=1), "auxiliary": arrays["aux"],
             "both": np.concatenate([arrays["target"].mean(axis=1), arrays["aux"]], axis=1)}
    lines = ["| logistic regression on | val | test |", "|---|---|---|"]
    for name, x in views.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x[split == "train"], y[split == "train"])
        accs = [100 * model.score(x[split == s], y[split == s]) for s in ("val", "test")]
        lines.append(f"| {name} | {accs[0]:.1f} | {accs[1]:.1f} |")
    return "\n".join(lines)


def selected(records: list[dict]) -> str:
    """Per method, the validation-best setting (mean over seeds) and its test numbers."""
    lines = ["| method | setting picked on val | student val | student test | teacher test |",
             "|---|---|---|---|---|"]
    for method, settings in SWEEP_METHODS.items():
        options = {}
        for setting in ["default", *settings]:
            variant = method if setting == "default" else f"{method}, {setting}"
            rows = [r for r in records if r["variant"] == variant]
            if rows:
                options[variant] = rows
        if not options:
            continue
        best = max(options, key=lambda v: mean_std(r["val_student_top1"] for r in options[v])[0])
        rows = options[best]
        stats = [mean_std(r[c] for r in rows) for c in
                 ("val_student_top1", "test_student_top1", "test_teacher_top1")]
        cells = ["-" if s is None else f"{s[0]:.1f} ± {s[1]:.1f}" for s in stats]
        lines.append(f"| {method} | {best} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/amid_exp/controlled"))
    parser.add_argument("--results", type=Path, default=RESULTS / "controlled.jsonl")
    parser.add_argument("--parts", nargs="+", default=["main", "sweep"], choices=["main", "sweep"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = parser.parse_args()
    results = args.results.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    arrays = make_dataset(args.work)
    print(references(arrays), "\n", flush=True)
    runner = Runner(args.work, results)
    start = time.perf_counter()
    plan: list[tuple[str, list[str], str]] = []
    if "main" in args.parts:
        plan += [(m, [], m) for m in MAIN_METHODS]
    if "sweep" in args.parts:
        plan += [(m, SWEEP[s], f"{m}, {s}") for m, names in SWEEP_METHODS.items() for s in names]
    for seed in args.seeds:
        for method, overrides, variant in plan:
            runner.run(method, seed, overrides, variant)
    records = load_results(results)
    print(f"\nsweep wall time {time.perf_counter() - start:.0f} s\n")
    print(table(records, list(MAIN_METHODS)), "\n")
    print(per_seed(records, list(MAIN_METHODS)), "\n")
    print(findings(records), "\n")
    sweep_rows = [m if s == "default" else f"{m}, {s}"
                  for m, names in SWEEP_METHODS.items() for s in ["default", *names]]
    print(table(records, sweep_rows), "\n")
    print(selected(records))


if __name__ == "__main__":
    main()
