#!/usr/bin/env python
"""Stacked sweeps, this code against an earlier revision, side by side in one run (issue 15).

    python bench/sweep_vs_previous.py --online        # against 6bdb0c7, the last hand-written stack
    python bench/sweep_vs_previous.py --rev HEAD --repeats 3    # against the last commit

Each earlier revision is unpacked from git into a temporary folder and imported
from there (PYTHONPATH), so all run on this machine, at this moment, from the
same caches; the runs alternate (old, new, old, new, ...) and each figure is
the median over the repeats, so a busy machine slows all alike. Printed:

(a) demo scale: whole `amid-train` processes, one AMID run and the six-member
    `sweeps.alpha` grid of params.yaml (two alphas x seeds 0-2) on the demo's
    caches; the grid's time as a multiple of one run's (issue 15's bound: 2.1).
    `--online` trains an online teacher with class positives instead (the
    configuration that bound was set on; the only one the hand-written stack of
    6bdb0c7 could stack, so against that revision part (a) needs it).
(b) 0.1 x UCF51 (synthetic caches of UCF51's shapes): seconds per epoch of one
    AMID configuration and of 16 stacked (alpha x seed), in-process, 3 epochs;
    the ratio (issue 15's bound: 13).

Timings are wall-clock on whatever this machine is; only the ratios measured
here, side by side, are meant to be compared.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import copy, json, sys, time, logging
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from train import make_cache, steady, timed_epochs
import argparse
args = argparse.Namespace(epochs=3, batch_size=64, device="cpu", dim=128)
tmp = Path(sys.argv[1])
import amid.distill.train as T
cfg = make_cache(tmp, 0.1, args)
data = T.data_from_config(cfg, T.resolve_device("cpu"))
try:
    from amid.distill.stacked import train_stack          # the earlier, hand-written stack
    cfg.train.loss.warmup_epochs = 0
    def stack(cfgs, runs):
        return train_stack("amid", cfgs, runs, data, live=False)
    def set_alpha(c, a):
        c.train.loss.alpha = a
except ImportError:                                       # this code: the methods under vmap
    cfg.methods["amid"] = {"warmup_epochs": 0, "fixed_teacher": False}  # the full step
    def stack(cfgs, runs):
        return T.train_members("amid", cfgs, runs, data=data, live=False)
    def set_alpha(c, a):
        c.methods["amid"]["alpha"] = a
one = steady(timed_epochs(T.train, "amid", cfg, tmp / "one", data=data, live=False))
cfgs = []
for k in range(16):
    c = copy.deepcopy(cfg)
    c.train.seed = k // 4
    set_alpha(c, [1.0, 2.0, 4.0, 8.0][k % 4])
    cfgs.append(c)
many = steady(timed_epochs(stack, cfgs, [tmp / f"m{k}" for k in range(16)]))
print(json.dumps({"one": one, "stack16": many}))
'''


def unpack(rev: str, into: Path) -> Path:
    """The revision's code as an importable `amid` package tree (the package-dir mapping)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "src.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "archive", rev], cwd=REPO, stdout=fh, check=True)
    src = into / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    pkg = into / "pkg"
    shutil.copytree(src / "amid", pkg / "amid")
    for part in ("extract", "distill", "evaluate"):
        shutil.copytree(src / part, pkg / "amid" / part)
    return src


def before_rename(new: dict) -> dict:
    """params.yaml for a revision before `mi_variant: class_prior` was renamed from `amid`."""
    old = copy.deepcopy(new)
    for section in old.get("methods", {}).values():
        if isinstance(section, dict) and section.get("mi_variant") == "class_prior":
            section["mi_variant"] = "amid"
    return old


def old_params(new: dict) -> dict:
    """params.yaml of this code in the earlier revision's layout (train.loss, train.methods)."""
    old = before_rename(new)
    amid = old.pop("methods")["amid"]
    if amid.pop("positives", "class") != "class" or amid.get("fixed_teacher"):
        raise SystemExit("the hand-written stack stacked only an online teacher with class "
                         "positives: compare with --online")
    old["train"]["loss"] = {k: v for k, v in amid.items()
                            if k not in ("teacher_run",)} | {"teacher_run": ""}
    old["train"]["methods"] = old.pop("pipeline")["methods"]
    alphas = new["sweeps"]["alpha"]["grid"]["methods"]["amid"]["alpha"]
    old["sweeps"] = {"alpha": {"method": "amid", "grid": {"train": {
        "seed": new["sweeps"]["alpha"]["grid"]["train"]["seed"], "loss": {"alpha": alphas}}}}}
    for key in ("train_per_class", "train_fraction"):
        old["dataset"].pop(key, None)
    old["demo"].pop("label_noise", None)  # the demo is built by this code; training never reads it
    return old


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:  # e.g. a revision whose params layout old_params does not know
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"{' '.join(cmd[2:])} failed with {env.get('PYTHONPATH', 'this tree')}"
                         f" on the path: {last}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", action="append",
                   help="an earlier revision; repeatable (default: 6bdb0c7)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--parts", default="ab")
    p.add_argument("--online", action="store_true",
                   help="(a) with methods.amid.fixed_teacher false and class positives: the "
                        "grid the hand-written stack (6bdb0c7) could stack, and issue 15's")
    args = p.parse_args()
    revs = args.rev or ["6bdb0c7"]
    with tempfile.TemporaryDirectory(prefix="amid-vs-") as tmp:
        tmp = Path(tmp)
        # the same CPU numerics for all (this code's entry points pin them, earlier
        # revisions did not): otherwise the comparison measures MKL's kernels, not the stacks
        from amid.entry import CPU_NUMERICS

        pins = {k: os.environ.get(k, v) for k, v in CPU_NUMERICS.items()}
        envs, hand_written, renamed = {}, {}, {}
        for rev in revs:
            src = unpack(rev, tmp / f"rev-{rev}")
            envs[rev] = {**os.environ, **pins, "PYTHONPATH": str(tmp / f"rev-{rev}" / "pkg")}
            hand_written[rev] = (src / "distill" / "stacked.py").exists()  # old params layout
            # `mi_variant: class_prior` was `amid` before (a revision refuses the other name)
            mi = src / "distill" / "losses" / "mi.py"
            renamed[rev] = mi.exists() and '"class_prior"' in mi.read_text()
        envs["this tree"], hand_written["this tree"] = {**os.environ, **pins}, False
        renamed["this tree"] = True
        print(f"revisions {', '.join(revs)} against the working tree; {args.repeats} repeats, "
              f"alternating; all with {' '.join(f'{k}={v}' for k, v in pins.items())}")
        if "a" in args.parts:
            demo = tmp / "demo"
            demo.mkdir()
            new = yaml.safe_load((REPO / "params.yaml").read_text())
            if args.online:
                new["methods"]["amid"] |= {"fixed_teacher": False, "positives": "class"}
            (demo / "params.yaml").write_text(yaml.safe_dump(new, sort_keys=False))
            if any(hand_written.values()):
                (demo / "params_old.yaml").write_text(yaml.safe_dump(old_params(new),
                                                                     sort_keys=False))
            if not all(renamed.values()):
                (demo / "params_prev.yaml").write_text(yaml.safe_dump(before_rename(new),
                                                                      sort_keys=False))
            for cmd in (["demo", "-q"], ["prepare", "-q"],
                        *(["run", "-m", m, "-q"] for m in ("visual", "audio", "text"))):
                subprocess.run(["amid-extract", *cmd], cwd=demo, check=True)
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(args.repeats):
                for k, who in enumerate(envs):
                    par = ("params_old.yaml" if hand_written[who] else
                           "params.yaml" if renamed[who] else "params_prev.yaml")
                    base = [sys.executable, "-m", "amid.distill.cli", "-p", par, "-q"]
                    times.setdefault((who, "one"), []).append(timed(
                        [*base, "-m", "amid", "-o", f"runs/{k}-{r}"], demo, envs[who]))
                    times.setdefault((who, "grid"), []).append(timed(
                        [*base, "--grid", "alpha", "-o", f"runs/{k}g{r}"], demo, envs[who]))
            print("(a) demo, whole processes: one amid run, the six-member sweeps.alpha")
            for who in envs:
                for how, pick in (("median", statistics.median), ("min", min)):
                    one, grid = pick(times[(who, "one")]), pick(times[(who, "grid")])
                    print(f"    {who} ({how}): one {one:.1f} s, grid {grid:.1f} s, "
                          f"grid / one = {grid / one:.2f}")
        if "b" in args.parts:
            rows: dict[str, list[dict]] = {who: [] for who in envs}
            for r in range(args.repeats):
                for k, who in enumerate(envs):
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, str(tmp / f"b{k}-{r}"),
                         str(REPO / "bench")], env=envs[who], check=True, capture_output=True,
                        text=True, cwd=tmp)  # not a folder holding an `amid` package
                    rows[who].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print("(b) 0.1 x UCF51, amid, 3 epochs: s/epoch of one configuration and of 16 stacked")
            for who in envs:
                for how, pick in (("median", statistics.median), ("min", min)):
                    one = pick(x["one"] for x in rows[who])
                    many = pick(x["stack16"] for x in rows[who])
                    print(f"    {who} ({how}): one {one:.3f}, 16 stacked {many:.3f}, "
                          f"ratio {many / one:.2f}")


if __name__ == "__main__":
    main()
