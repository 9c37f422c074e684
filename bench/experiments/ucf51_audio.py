"""Real UCF51 CNN14 audio embeddings: audio-only classifier vs a linear one, and raw-feature kNN.

    python bench/experiments/ucf51_audio.py [--work /tmp/amid_exp/ucf51] [--archive PATH]

1. `amid-extract import-ucf51 ARCHIVE --out WORK/cache/ucf51/audio__cnn14-emb512.h5`
   (6,837 clip-level 512-d vectors).
2. A manifest for those ids: label = the class folder in the archive, split 1 by the
   adapter's rule (`amid.extract.adapters.ucf51.split_of`: groups 01-07 test, else
   train); no media paths. No helper builds it from the archive, so it is built here.
3. (a) `baseline` with dataset.target=[audio], auxiliary=[] and the pool/MLP student
   (train.model.student=pool), repository defaults otherwise, seeds 0-2, last epoch;
   against scikit-learn LogisticRegression on standardised features (C=1, and C picked
   on a validation carve of the training split: groups 08-10, then refit on all of train).
   (b) the raw features as embeddings: `amid.evaluate.metrics.recall_at_k`, test queries
   against the train gallery by cosine, checked against sklearn NearestNeighbors for R@1.
Results: bench/experiments/results/ucf51.jsonl (training runs) and stdout tables.
"""

from __future__ import annotations

import argparse
import subprocess
import tarfile
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import yaml
from _common import REPO, RESULTS, Runner, load_results, table

ARCHIVE = Path("/work/shared/data/ucf51/ucf51_cnn14_emb512.tar.gz")
CACHE = "cache/ucf51/audio__cnn14-emb512.h5"
KS = (1, 5, 10, 20, 50)
VAL_GROUPS = (8, 9, 10)  # the validation carve for picking C: whole actor groups
C_GRID = (0.01, 0.1, 1.0, 10.0)
MLP_SWEEP = {  # settings of the audio-only baseline compared on the same validation carve
    "default": [],
    "epochs=10": ["train.epochs=10"],
    "dropout=0.5": ["train.model.dropout=0.5"],
    "weight_decay=0.05": ["train.weight_decay=0.05"],
}


def archive_manifest(archive: Path) -> pd.DataFrame:
    """sample_id, label (class folder), split (split 1) for every real .npy in the archive."""
    from amid.extract.adapters.ucf51 import split_of

    rows = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = PurePosixPath(member.name)
            if member.isfile() and name.suffix == ".npy" and not name.name.startswith("._"):
                rows.append({"sample_id": name.stem, "label": name.parent.name,
                             "split": split_of(name.stem, 1)})
    return pd.DataFrame(rows).sort_values("sample_id", ignore_index=True)


def write_params(work: Path, manifest: str, cache_dir: str = "cache") -> None:
    """params.yaml of an audio-only project: the repository's, dataset/extract replaced."""
    from amid.storage import write_text

    cfg = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    cfg["dataset"] = {"name": "ucf51", "adapter": "csv", "adapter_options": {}, "root": "data",
                      "manifest": manifest, "cache_dir": cache_dir,
                      "target": ["audio"], "auxiliary": [], "fold": None}
    cfg["extract"] = {"audio": {"extractor": "cnn14-emb512", "params": {}}}
    cfg["pipeline"]["methods"] = ["baseline"]
    cfg["train"]["model"]["student"] = "pool"
    work.mkdir(parents=True, exist_ok=True)
    write_text(work / "params.yaml", yaml.safe_dump(cfg, sort_keys=False))


def setup(work: Path, archive: Path) -> pd.DataFrame:
    """The cache, the split-1 manifest, and a second project whose manifest carves val."""
    from amid.extract.adapters.ucf51 import group_of
    from amid.manifest import write_manifest

    write_params(work, "data/manifests/ucf51.csv")
    if not (work / CACHE).exists():
        subprocess.run(["amid-extract", "import-ucf51", str(archive), "--out", CACHE],
                       cwd=work, check=True)
    manifest = archive_manifest(archive)
    write_manifest(manifest, work / "data/manifests/ucf51.csv")
    carve = manifest.copy()
    in_val = (carve["split"] == "train") & carve["sample_id"].map(group_of).isin(VAL_GROUPS)
    carve.loc[in_val, "split"] = "val"
    write_params(work / "valcarve", "data/manifests/ucf51_valcarve.csv", str(work / "cache"))
    write_manifest(carve, work / "valcarve/data/manifests/ucf51_valcarve.csv")
    return manifest


def features(work: Path, manifest: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from amid.cache import read_cache

    cache = read_cache(work / CACHE)
    index = cache.index()
    x = np.stack([cache.sequence(index[i])[0] for i in manifest["sample_id"]])  # (n, 512)
    classes = sorted(manifest["label"].unique())
    y = manifest["label"].map({c: k for k, c in enumerate(classes)}).to_numpy()
    return x.astype(np.float32), y


def linear(x: np.ndarray, y: np.ndarray, manifest: pd.DataFrame) -> list[str]:
    """LogisticRegression on standardised features: C=1, and C picked on the val carve."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from amid.extract.adapters.ucf51 import group_of

    train = (manifest["split"] == "train").to_numpy()
    test = ~train
    groups = manifest["sample_id"].map(group_of).to_numpy()
    val = train & np.isin(groups, VAL_GROUPS)
    fit = train & ~val

    def model(c: float):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))

    lines = []
    val_acc = {}
    for c in C_GRID:
        start = time.perf_counter()
        val_acc[c] = model(c).fit(x[fit], y[fit]).score(x[val], y[val])
        lines.append(f"| C={c:g} on train minus groups 08-10 | val {100 * val_acc[c]:.1f} | - | "
                     f"{time.perf_counter() - start:.1f} |")
    best = max(val_acc, key=val_acc.get)
    for c, why in ((1.0, "C=1 (default)"), (best, f"C={best:g} (picked on val)")):
        start = time.perf_counter()
        acc = model(c).fit(x[train], y[train]).score(x[test], y[test])
        lines.append(f"| {why}, refit on all train | - | test {100 * acc:.1f} | "
                     f"{time.perf_counter() - start:.1f} |")
    return ["| logistic regression | val Top-1 | test Top-1 | wall s |", "|---|---|---|---|",
            *lines]


def retrieval(x: np.ndarray, y: np.ndarray, manifest: pd.DataFrame) -> list[str]:
    """R@K of the raw features (test queries, train gallery, cosine), with an sklearn check."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    from amid.evaluate.metrics import recall_at_k

    train = (manifest["split"] == "train").to_numpy()
    test = ~train
    rows = ["| features | " + " | ".join(f"R@{k}" for k in KS) + " | R@1 (sklearn check) |",
            "|---|" + "---|" * (len(KS) + 1)]
    scaler = StandardScaler().fit(x[train])
    for name, feats in (("raw CNN14", x), ("standardised on train", scaler.transform(x))):
        rec = recall_at_k(feats[test], y[test], feats[train], y[train], ks=KS)
        nn = NearestNeighbors(n_neighbors=1, metric="cosine").fit(feats[train])
        hit = y[train][nn.kneighbors(feats[test], return_distance=False)[:, 0]] == y[test]
        rows.append(f"| {name} | " + " | ".join(f"{100 * rec[f'R@{k}']:.1f}" for k in KS)
                    + f" | {100 * hit.mean():.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/amid_exp/ucf51"))
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--results", type=Path, default=RESULTS / "ucf51.jsonl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = args.results.resolve()
    manifest = setup(args.work, args.archive.resolve())
    counts = manifest["split"].value_counts().to_dict()
    print(f"manifest: {len(manifest)} ids, {manifest['label'].nunique()} classes, {counts}")
    x, y = features(args.work, manifest)
    print("\n".join(retrieval(x, y, manifest)), "\n", flush=True)
    print("\n".join(linear(x, y, manifest)), "\n", flush=True)
    # the MLP's settings, compared on the validation carve (trained without groups 08-10)
    carve = Runner(args.work / "valcarve", results.with_name("ucf51_valcarve.jsonl"))
    for name, overrides in MLP_SWEEP.items():
        carve.run(f"baseline, {name} (val carve)", "baseline", overrides, seeds=args.seeds)
    carved = load_results(carve.results)
    print(table(carved), "\n")
    best = max(MLP_SWEEP, key=lambda n: np.mean([r["val_student_top1"] for r in carved
                                                if r["variant"] == f"baseline, {n} (val carve)"]))
    print(f"picked on val: {best}")
    # then on the whole training split, as the linear classifier was
    runner = Runner(args.work, results)
    for name in dict.fromkeys(["default", best]):
        runner.run(f"baseline, {name} (pool/MLP student, audio only)", "baseline",
                   MLP_SWEEP[name], seeds=args.seeds)
    records = load_results(results)
    print(table(records))
    for variant in dict.fromkeys(r["variant"] for r in records):
        r1 = [100 * r["test_student_r1"] for r in records if r["variant"] == variant]
        print(f"{variant}: student-embedding R@1 (test vs train) "
              f"{np.mean(r1):.1f} ± {np.std(r1, ddof=1):.1f}")


if __name__ == "__main__":
    main()
