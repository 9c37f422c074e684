#!/usr/bin/env python
"""Benchmarks of the training stage (issue 6): prints figures, checks nothing.

    python bench/train.py                      # CPU defaults, a few minutes on 2 cores
    python bench/train.py --device cuda --epochs 100 --grid-scale 1 --size-base 1

Synthetic caches at UCF51 scale (4,893 train / 1,944 test samples, 51
classes, visual sequences 16 x 1024, audio 512-d clip-level) are written with
the project's own cache and manifest writers into a temporary folder.

(a) reference loop vs the project's trainer, method amid, same model, same
    epochs. The reference is written the way research code usually is: a
    torch Dataset that opens the HDF5 caches lazily per worker and reads each
    sample, a DataLoader with a padding collate, fp32, `.item()` on every loss
    term of every batch. Per-epoch wall time of each, and the ratio.
(b) the grid: one configuration with the plain trainer, then G members
    (seeds x alpha) trained together as one stack (`amid-train --sweep`).
(c) time per epoch and peak memory (CPU: peak RSS of a fresh subprocess;
    GPU: torch.cuda.max_memory_allocated) at 1x, 4x, 16x the samples.
(d) train.compile on vs off (first epoch includes compilation).

The warm-up is set to 0 epochs so every epoch runs the full AMID step
(discriminators on). Per-epoch times of the trainer come from its own
end-of-epoch log records, so they include evaluation and the checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from amid.cache import cache_path, write_cache
from amid.config import Config, DatasetConfig, ModalityExtractConfig, TrainConfig
from amid.distill.data import Batch
from amid.distill.methods import METHODS, MethodContext
from amid.distill.train import data_from_config, resolve_device, seed_everything, train
from amid.manifest import write_manifest

UCF51 = {"train": 4893, "test": 1944, "classes": 51, "steps": 16, "visual": 1024, "audio": 512}


# ------------------------------------------------------------------ data
def make_cache(root: Path, scale: float, args: argparse.Namespace, seed: int = 0) -> Config:
    """A synthetic UCF51-shaped dataset under `root`; the config that trains on it."""
    rng = np.random.default_rng(seed)
    n_cls = UCF51["classes"]
    n = {s: max(n_cls, round(UCF51[s] * scale)) for s in ("train", "test")}
    labels = np.concatenate([rng.permutation(np.arange(n[s]) % n_cls) for s in ("train", "test")])
    splits = ["train"] * n["train"] + ["test"] * n["test"]
    ids = [f"v{k:06d}" for k in range(len(labels))]
    pv = rng.normal(size=(n_cls, UCF51["visual"])).astype(np.float32)
    pa = rng.normal(size=(n_cls, UCF51["audio"])).astype(np.float32)
    steps = UCF51["steps"]
    visual = [0.3 * pv[y] + rng.standard_normal((steps, UCF51["visual"]), dtype=np.float32)
              for y in labels]
    audio = [(2.0 * pa[y] + rng.standard_normal(UCF51["audio"], dtype=np.float32))[None]
             for y in labels]
    df = pd.DataFrame({"sample_id": ids, "label": [f"class{y:02d}" for y in labels],
                       "split": splits})
    write_manifest(df, root / "manifest.csv")
    for m, seqs in (("visual", visual), ("audio", audio)):
        write_cache(cache_path(root / "cache", "ucf51", m, "synthetic"), ids, seqs,
                    {"modality": m, "extractor": "synthetic", "model": "none", "params": {}})
    cfg = Config(
        dataset=DatasetConfig(name="ucf51", root=str(root), manifest=str(root / "manifest.csv"),
                              cache_dir=str(root / "cache"), target=["visual"],
                              auxiliary=["audio"]),
        extract={m: ModalityExtractConfig(extractor="synthetic") for m in ("visual", "audio")},
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device),
    )
    cfg.train.model.dim = cfg.train.model.hidden = cfg.train.model.disc_hidden = args.dim
    if hasattr(cfg, "methods"):  # (bench/sweep_vs_previous.py also runs this with older code)
        # every epoch runs the full AMID step: adversarial terms on, the teacher online
        cfg.methods["amid"] = {"warmup_epochs": 0, "fixed_teacher": False}
    return cfg


# ------------------------------------------------------------------ timing helpers
class EpochClock(logging.Handler):
    """Timestamps of the trainer's end-of-epoch log records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.marks: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if " epoch " in msg and ("done" in msg or ":" in msg):
            self.marks.append(time.perf_counter())


def timed_epochs(fn, *a, **k) -> list[float]:
    """Run fn (a training call) and return the wall time of each epoch."""
    clock = EpochClock()
    logger = logging.getLogger("amid.distill")
    logger.addHandler(clock)
    logger.setLevel(logging.INFO)
    start = time.perf_counter()
    try:
        fn(*a, **k)
    finally:
        logger.removeHandler(clock)
    marks = [start, *clock.marks]
    return [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]


def steady(epochs: list[float]) -> float:
    """Per-epoch time without the first epoch (warm-up, compilation) when there are more."""
    return statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------ (a) reference loop
class H5Samples(Dataset):
    """Reads one sample per call from the HDF5 caches; files open lazily in each worker."""

    def __init__(self, paths: dict[str, Path], rows: np.ndarray, labels: np.ndarray) -> None:
        self.paths, self.rows, self.labels = paths, rows, labels
        self.files: dict[str, h5py.File] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        if self.files is None:
            self.files = {m: h5py.File(p, "r") for m, p in self.paths.items()}
        r = int(self.rows[i])
        item = {}
        for m, f in self.files.items():
            lo, hi = f["offsets"][r], f["offsets"][r + 1]
            item[m] = torch.from_numpy(np.asarray(f["features"][lo:hi], dtype=np.float32))
        return item, int(self.labels[i])


def collate(items):
    out = {}
    for m in items[0][0]:
        seqs = [it[0][m] for it in items]
        out[m] = (pad_sequence(seqs, batch_first=True), torch.tensor([len(s) for s in seqs]))
    return out, torch.tensor([it[1] for it in items])


def reference_loop(cfg: Config, epochs: int, workers: int) -> list[float]:
    """The usual research loop, same Method (model sizes, losses) as the trainer."""
    from amid.distill.methods import method_options, weighted_total

    tc = cfg.train
    device = resolve_device(tc.device)
    data = data_from_config(cfg, torch.device("cpu"))  # only for the model's shapes and stats
    seed_everything(tc.seed)
    opts = method_options("amid", cfg.methods.get("amid"))
    method = METHODS.get("amid")(MethodContext(data, tc.model, opts, tc.epochs, "amid")).to(device)
    opt = torch.optim.AdamW(method.network_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    disc_opt = torch.optim.Adam(method.discriminators.parameters(), lr=tc.disc_lr,
                                betas=(0.5, 0.999))
    paths = {m: d.source for m, d in {**data.target, **data.auxiliary}.items()}
    rows = data.splits["train"].numpy()
    labels = data.labels.numpy()[rows]
    train_set = H5Samples(paths, rows, labels)
    loader = DataLoader(train_set, batch_size=tc.batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate, drop_last=len(rows) % tc.batch_size == 1,
                        persistent_workers=workers > 0)
    eval_loader = DataLoader(train_set, batch_size=tc.eval_batch_size, num_workers=workers,
                             collate_fn=collate)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        method.train()
        log: dict[str, list[float]] = {}
        for inputs, y in loader:
            inputs = {m: (x.to(device), n.to(device)) for m, (x, n) in inputs.items()}
            y = y.to(device)
            b = len(y)
            batch = Batch(torch.arange(b, device=device), y, {"visual": inputs["visual"]},
                          {"audio": inputs["audio"]}, torch.ones(b, dtype=torch.bool,
                                                                 device=device))
            out = method(batch)
            d = method.discriminator_losses(batch, out, epoch)
            if d is not None:
                disc_opt.zero_grad()
                d["total"].backward()
                disc_opt.step()
                for k, v in d.items():
                    log.setdefault(f"disc_{k}", []).append(v.item())
            terms = method.losses(batch, out, epoch)
            total = weighted_total(terms, method.weights(epoch))
            opt.zero_grad()
            total.backward()
            opt.step()
            for k, v in {**terms, "total": total}.items():
                log.setdefault(k, []).append(v.item())
        method.end_epoch(epoch)
        method.eval()
        correct = 0
        with torch.no_grad():
            for inputs, y in eval_loader:
                inputs = {m: (x.to(device), n.to(device)) for m, (x, n) in inputs.items()}
                b = len(y)
                batch = Batch(torch.arange(b, device=device), y.to(device),
                              {"visual": inputs["visual"]}, {"audio": inputs["audio"]},
                              torch.ones(b, dtype=torch.bool, device=device))
                pred = method.predict(batch)
                correct += (pred["student"][1].argmax(1) == batch.labels).sum().item()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


# ------------------------------------------------------------------ parts
def part_reference(args, tmp: Path) -> None:
    cfg = make_cache(tmp / "a", args.scale, args)
    ref = reference_loop(cfg, args.epochs, args.workers)
    fast = timed_epochs(train, "amid", cfg, tmp / "a" / "run", live=False)
    r, f = steady(ref), steady(fast)
    print(f"(a) amid, {args.epochs} epochs, scale {args.scale} "
          f"({round(UCF51['train'] * args.scale)} train samples), batch {args.batch_size}")
    print(f"    reference loop (h5py per sample, DataLoader {args.workers} workers, fp32, "
          f".item() per batch): {r:8.3f} s/epoch  (epochs: {fmt(ref)})")
    print(f"    project trainer (device-resident, one sync per epoch):          "
          f"{f:8.3f} s/epoch  (epochs: {fmt(fast)})")
    print(f"    speed-up: {r / f:.2f}x")


def part_grid(args, tmp: Path) -> None:
    cfg = make_cache(tmp / "b", args.grid_scale, args)
    device = resolve_device(cfg.train.device)
    data = data_from_config(cfg, device)
    one = timed_epochs(train, "amid", cfg, tmp / "b" / "one", data=data, live=False)
    from amid.distill.train import train_members

    cfgs = []
    alphas = [1.0, 2.0, 4.0, 8.0]
    for k in range(args.grid):
        c = copy.deepcopy(cfg)
        c.train.seed = k // len(alphas)
        c.methods["amid"]["alpha"] = alphas[k % len(alphas)]
        cfgs.append(c)
    runs = [tmp / "b" / f"m{k}" for k in range(args.grid)]
    many = timed_epochs(train_members, "amid", cfgs, runs, data=data, live=False)
    o, m = steady(one), steady(many)
    print(f"(b) grid, scale {args.grid_scale}, {args.epochs} epochs: one configuration "
          f"{o:.3f} s/epoch; {args.grid} stacked {m:.3f} s/epoch; ratio {m / o:.2f} "
          f"(vs {args.grid} one after another: {args.grid * o / m:.2f}x faster)")


def part_sizes(args, tmp: Path) -> None:
    print(f"(c) growth with dataset size (base = {args.size_base} x UCF51, {args.size_epochs} "
          f"epochs, fresh process each)")
    for mult in args.sizes:
        cmd = [sys.executable, __file__, "--child-size", str(args.size_base * mult),
               "--device", args.device, "--epochs", str(args.size_epochs), "--dim", str(args.dim),
               "--batch-size", str(args.batch_size), "--tmp", str(tmp / f"c{mult}")]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                        text=True).stdout.splitlines()[-1])
        print(f"    {mult:>3}x ({res['n_train']:6d} train): {res['epoch_s']:8.3f} s/epoch, "
              f"load {res['load_s']:.1f} s, peak {res['memory']}")


def child_size(args) -> None:
    tmp = Path(args.tmp)
    cfg = make_cache(tmp, args.child_size, args)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    data = data_from_config(cfg, device)
    load = time.perf_counter() - start
    epochs = timed_epochs(train, "amid", cfg, tmp / "run", data=data, live=False)
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU (max_memory_allocated)"
    else:
        memory = f"{peak_rss_mib():.0f} MiB RSS (VmHWM)"
    tensors = [data.labels, *[d.x for d in {**data.target, **data.auxiliary}.values()]]
    held = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    print(json.dumps({"n_train": int(data.splits["train"].numel()), "epoch_s": steady(epochs),
                      "load_s": load, "memory": f"{memory}, data tensors {held:.0f} MiB"}))


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM: unlike ru_maxrss, not the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_compile(args, tmp: Path) -> None:
    cfg = make_cache(tmp / "d", args.compile_scale, args)
    cfg.train.epochs = args.compile_epochs
    device = resolve_device(cfg.train.device)
    data = data_from_config(cfg, device)
    rows = {}
    for on in (False, True):
        c = copy.deepcopy(cfg)
        c.train.compile = on
        rows[on] = timed_epochs(train, "amid", c, tmp / "d" / str(on), data=data, live=False)
    e, c = rows[False], rows[True]
    # epoch 1 recompiles once more (the epoch number turns from a constant into a symbol)
    se, sc = statistics.median(e[2:] or e), statistics.median(c[2:] or c)
    print(f"(d) train.compile, scale {args.compile_scale}, {args.compile_epochs} epochs "
          f"(steady = median after the first two): eager {se:.3f} s/epoch, compiled {sc:.3f} "
          f"s/epoch; compiled epochs {fmt(c)} (eager {fmt(e)}); steady-state speed-up "
          f"{se / sc:.2f}x")


def fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    return (f"CPU {cpu_model()}, {torch.get_num_threads()} torch threads "
            f"(torch {torch.__version__})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of (a) and (b) (default: 3 on CPU, 20 on GPU)")
    p.add_argument("--scale", type=float, default=None,
                   help="fraction of UCF51's samples in (a) (default: 1)")
    p.add_argument("--grid", type=int, default=16, help="members of the stacked grid in (b)")
    p.add_argument("--grid-scale", type=float, default=None,
                   help="fraction of UCF51 in (b) (default: 0.1 on CPU, 1 on GPU)")
    p.add_argument("--size-base", type=float, default=None,
                   help="fraction of UCF51 at 1x in (c) (default: 0.05 on CPU, 1 on GPU)")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    p.add_argument("--size-epochs", type=int, default=2)
    p.add_argument("--compile-scale", type=float, default=None,
                   help="fraction of UCF51 in (d) (default: 0.05 on CPU, 1 on GPU)")
    p.add_argument("--compile-epochs", type=int, default=4)
    p.add_argument("--dim", type=int, default=128, help="d and every hidden width (params.yaml)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference")
    p.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'ab'")
    p.add_argument("--child-size", type=float, help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.device = str(device)
    args.epochs = args.epochs or (20 if gpu else 3)
    args.scale = args.scale or 1.0
    args.grid_scale = args.grid_scale or (1.0 if gpu else 0.1)
    args.size_base = args.size_base or (1.0 if gpu else 0.05)
    args.compile_scale = args.compile_scale or (1.0 if gpu else 0.05)
    if args.child_size is not None:
        child_size(args)
        return
    print(f"device: {device_name(device)}")
    with tempfile.TemporaryDirectory(prefix="amid-bench-") as tmp:
        for part, fn in (("a", part_reference), ("b", part_grid), ("c", part_sizes),
                         ("d", part_compile)):
            if part in args.parts:
                start = time.perf_counter()
                fn(args, Path(tmp))
                print(f"    [{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
