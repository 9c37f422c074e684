#!/usr/bin/env python
"""Does the stack pay? The same M members stacked, and one after another, in one process.

    python bench/stack_vs_sequential.py                         # the demo's params.yaml, amid
    python bench/stack_vs_sequential.py --method kd --members 3 --epochs 5
    python bench/stack_vs_sequential.py --ucf51 0.1 --members 8  # synthetic UCF51 shapes

M members that differ only in `train.seed` (what `dvc repro`'s `--repeat-seeds`
stacks) train twice from the same loaded data: as one stack (`train_members`,
stacked) and one after another (`train` per member, each its own lone run).
The two alternate (stacked, sequential, stacked, ...) for `--repeats` rounds,
so a machine that other work slows slows both alike; each figure is the
median over the rounds. Wall time of the whole call: set-up, every epoch,
evaluation, checkpoints, the final outputs. Printed: both times, the ratio
stacked / sequential (below 1: the stack pays) and the machine.

Default workload: `params.yaml` in the working directory (the demo's caches
must exist: `dvc repro extract`); `--ucf51 SCALE` writes synthetic caches of
UCF51's shapes instead (bench/train.py's `make_cache`) into a temporary folder.
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import cpu_model, make_cache  # noqa: E402  (bench/train.py, beside this file)

from amid.config import Config, load_config  # noqa: E402
from amid.distill.methods import check_method_options  # noqa: E402
from amid.distill.train import data_from_config, resolve_device, train, train_members  # noqa: E402


def members(cfg: Config, m: int) -> list[Config]:
    """M copies of `cfg` at seeds train.seed, train.seed + 1, ..."""
    out = []
    for k in range(m):
        c = copy.deepcopy(cfg)
        c.train.seed = cfg.train.seed + k
        out.append(c)
    return out


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--method", default="amid")
    p.add_argument("--members", type=int, default=3, help="M (default 3: the demo's seeds)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="rounds of (stacked, sequential)")
    p.add_argument("--ucf51", type=float, default=None, metavar="SCALE",
                   help="synthetic UCF51-shaped caches at this fraction of its samples")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                   help="params.yaml override (key=value), as amid-train -S")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="amid-stack-bench-") as tmp:
        if args.ucf51 is not None:
            ns = argparse.Namespace(epochs=args.epochs, batch_size=64, device="cpu", dim=128)
            cfg, where = make_cache(Path(tmp) / "data", args.ucf51, ns), f"UCF51 x {args.ucf51}"
        else:
            cfg = load_config(args.params, [f"train.epochs={args.epochs}", *args.overrides],
                              check=check_method_options)
            where = f"{args.params} ({cfg.dataset.name})"
        cfg.train.epochs = args.epochs
        device = resolve_device(cfg.train.device)
        data = data_from_config(cfg, device)
        cfgs = members(cfg, args.members)
        times: dict[str, list[float]] = {"stacked": [], "sequential": []}
        def stacked(root: Path) -> None:
            train_members(args.method, cfgs, [root / f"m{k}" for k in range(len(cfgs))],
                          data=data, live=False, stacked=True)

        def sequential(root: Path) -> None:
            for k, c in enumerate(cfgs):
                train(args.method, c, root / f"m{k}", data=data, live=False)

        for r in range(args.repeats):
            for mode, fn in (("stacked", stacked), ("sequential", sequential)):
                times[mode].append(timed(fn, Path(tmp) / f"{mode}{r}"))
    st, sq = (statistics.median(times[k]) for k in ("stacked", "sequential"))
    print(f"machine: {device}, {cpu_model()}, {torch.get_num_threads()} torch threads "
          f"(torch {torch.__version__})")
    print(f"workload: {args.method} on {where}, M = {args.members} members (seeds), "
          f"{args.epochs} epochs, batch {cfg.train.batch_size}; median of {args.repeats} "
          "alternating rounds")
    print(f"    sequential (one after another): {sq:8.2f} s   rounds: "
          + ", ".join(f"{t:.2f}" for t in times["sequential"]))
    print(f"    stacked (one vmapped stack):    {st:8.2f} s   rounds: "
          + ", ".join(f"{t:.2f}" for t in times["stacked"]))
    print(f"    ratio stacked / sequential: {st / sq:.2f} "
          f"({'the stack pays' if st < sq else 'one after another is faster'})")


if __name__ == "__main__":
    main()
