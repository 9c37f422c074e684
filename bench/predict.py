"""How `amid-predict` scales with the number of samples: 5k to 300k ids.

    python bench/predict.py                  # 5k, 10k, 20k, 50k, 100k, 300k
    python bench/predict.py --sizes 5000 10000 --steps 8 --dim 64

For each size, a synthetic cache (each sample `--steps` frames of `--dim`
float32 features) and a run folder holding a small GRU student are written to
a temporary folder; then the library behind `amid-predict RUN --cache ...` is
timed: loading and checking the cache and running the student (`predict`),
then writing the CSV and HDF5 (`write_predictions`), fastest of `--repeat`
runs each. Printed: seconds per
phase, microseconds per id, and the growth per doubling of ids,
(t2 / t1) ** (1 / log2(n2 / n1)): about 2.0 for linear time, 4.0 for
quadratic. Before the fix (issue 14 item 14) the id -> row map was rebuilt
for every id: 5k ids 3.9 s, 10k 8.4 s, 20k 19.4 s, 300k unfinished after 11
minutes. Figures only: the tests never assert timing.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amid.cache import write_cache
from amid.distill.inference import save_module
from amid.distill.models import MultiModalEncoder, Student
from amid.evaluate.predict import load, predict, write_predictions

CLASSES = [f"class{k}" for k in range(10)]
IDENTITY = {"modality": "visual", "extractor": "synthetic", "model": "none", "params": {}}


def make_run(run: Path, dim: int, cache: Path) -> None:
    torch.manual_seed(0)
    spec = {"visual": dict(in_dim=dim, out_dim=32, kind="gru", hidden=32, layers=1,
                           bidirectional=False, dropout=0.0)}
    encoder = MultiModalEncoder(spec, dim=32)
    model = Student(encoder, nn.Linear(32, len(CLASSES))).eval()
    record = {"visual": {"cache": str(cache), "identity": IDENTITY, "fingerprint": ""}}
    meta = {"method": "amid", "classes": CLASSES, "target": ["visual"], "auxiliary": [],
            "feature_dims": {"visual": dim}, "max_steps": None, "dataset": "bench",
            "fold": None, "seed": 0, "module": "student", "inputs": record,
            "arch": {"encoder": encoder.config(), "num_classes": len(CLASSES)}}
    run.mkdir(parents=True)
    save_module(model, meta, run, "student")
    (run / "config.json").write_text(json.dumps({"method": "amid", "inputs": record, "config": {
        "dataset": {"name": "bench", "target": ["visual"]},
        "extract": {"visual": {"extractor": "synthetic"}}}}))


def make_cache(path: Path, n: int, steps: int, dim: int) -> Path:
    rng = np.random.default_rng(n)
    block = rng.normal(size=(n * steps, dim)).astype(np.float32)
    sequences = [block[k * steps:(k + 1) * steps] for k in range(n)]
    return write_cache(path, [f"clip{k:07d}" for k in range(n)], sequences, IDENTITY)


def bench(n: int, steps: int, dim: int, folder: Path, repeat: int) -> dict[str, float]:
    """Fastest of `repeat` timings per phase (the machine may be shared)."""
    cache = make_cache(folder / f"cache{n}.h5", n, steps, dim)
    run = Path(tempfile.mkdtemp(dir=folder)) / "run"
    make_run(run, dim, cache)
    best = {"predict": math.inf, "write": math.inf}
    for _ in range(repeat):
        t0 = time.perf_counter()
        student = load(run)
        result, classes = predict(student, {"visual": cache}, batch_size=256)
        t1 = time.perf_counter()
        write_predictions(result, classes, folder / f"p{n}.csv")
        t2 = time.perf_counter()
        assert len(result["ids"]) == n
        best = {"predict": min(best["predict"], t1 - t0), "write": min(best["write"], t2 - t1)}
    for leftover in (cache, folder / f"p{n}.csv", folder / f"p{n}.h5"):
        leftover.unlink()
    return {**best, "total": best["predict"] + best["write"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[5_000, 10_000, 20_000, 50_000, 100_000, 300_000])
    parser.add_argument("--steps", type=int, default=4, help="frames per sample")
    parser.add_argument("--dim", type=int, default=16, help="feature dimension")
    parser.add_argument("--repeat", type=int, default=3, help="timings per size (fastest kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier figures on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"{args.steps} steps x {args.dim} features per sample; GRU student (hidden 32)")
    print(f"{'ids':>8} {'predict s':>10} {'write s':>8} {'total s':>8} {'us/id':>7} "
          f"{'x per doubling':>15}")
    previous = None
    with tempfile.TemporaryDirectory(prefix="amid-bench-predict-") as tmp:
        for n in args.sizes:
            t = bench(n, args.steps, args.dim, Path(tmp), args.repeat)
            growth = ""
            if previous is not None:
                (n0, t0) = previous
                growth = f"{(t['total'] / t0) ** (1 / math.log2(n / n0)):.2f}"
            print(f"{n:>8} {t['predict']:>10.2f} {t['write']:>8.2f} {t['total']:>8.2f} "
                  f"{1e6 * t['total'] / n:>7.1f} {growth:>15}", flush=True)
            previous = (n, t["total"])


if __name__ == "__main__":
    main()
