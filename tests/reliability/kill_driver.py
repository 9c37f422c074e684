"""SIGKILL driver for test_extract_faults.py: kill `amid-extract run` again and again.

Run as a script: `python kill_driver.py WORKDIR SEED MIN_KILLS`. WORKDIR holds
`params.yaml` (the full manifest) and `params_half.yaml` (its first half).

Starting a Python process with torch costs ~3 s, so a kill per process start
would make 20 kills take a minute. Instead this driver imports everything once
and forks a child per attempt that runs the real CLI (`amid.extract.cli.app`)
in-process; the driver then SIGKILLs the child at a random moment, or at the
moment the final file or the cleanup is being written. The driver itself never
runs a torch operation, so forking it is safe.

After every kill each `.h5` file left behind must open with h5py (only `.tmp`
strays may not); after each round's completing run the cache must equal the
reference (an uninterrupted run), with no stray, shard folder or lock left.
Prints one JSON report on stdout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import h5py
import numpy as np

import amid.extract.extractors  # noqa: F401  (the CLI imports these lazily)
import amid.extract.run  # noqa: F401
import amid.manifest  # noqa: F401
from amid.cache import read_cache
from amid.extract.cli import app

NAME = "visual__pixels.h5"


def _child(argv: list[str]) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        app(argv, prog_name="amid-extract")
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        os._exit(3)
    os._exit(0)


def _argv(params: Path) -> list[str]:
    return ["run", "-m", "visual", "--params", str(params), "--shard-size", "1", "--quiet"]


def _is_stray(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _check_files(cache_dir: Path, problems: list[str], when: str) -> dict[str, bool]:
    """Every non-stray .h5 opens; returns which kinds of leftovers exist."""
    state = {"shard_tmp": False, "final_tmp": False, "parts": False, "final": False}
    for path in cache_dir.rglob("*"):
        if _is_stray(path):
            state["shard_tmp" if path.parent.name.endswith(".parts") else "final_tmp"] = True
            continue
        if path.suffix == ".h5":
            try:
                with h5py.File(path, "r") as f:
                    f["ids"].asstr()[...]
            except Exception as exc:  # the very thing this driver looks for
                problems.append(f"{when}: {path.name} does not open: {exc}")
    state["parts"] = (cache_dir / f"{NAME}.parts").exists()
    state["final"] = (cache_dir / NAME).exists()
    return state


def _final_tmp_exists(cache_dir: Path) -> bool:
    return any(n.startswith(f".{NAME}.") and n.endswith(".tmp") for n in os.listdir(cache_dir))


def _attempt(params: Path, cache_dir: Path, mode: str, delay: float) -> bool:
    """One child run; True when it was killed before it finished."""
    pid = os.fork()
    if pid == 0:
        _child(_argv(params))
    t0 = time.perf_counter()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"child failed with {os.waitstatus_to_exitcode(status)}")
            return False
        if mode == "random" and time.perf_counter() - t0 >= delay:
            break
        if mode == "finalize" and cache_dir.exists() and _final_tmp_exists(cache_dir):
            time.sleep(delay)
            break
        if mode == "cleanup" and (cache_dir / NAME).exists():
            break
        time.sleep(0.0002)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return True


def _run_to_end(params: Path) -> float:
    pid = os.fork()
    if pid == 0:
        _child(_argv(params))
    t0 = time.perf_counter()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("an uninterrupted run failed")
    return time.perf_counter() - t0


def main(workdir: Path, seed: int, min_kills: int) -> dict:
    rng = random.Random(seed)
    params, half = workdir / "params.yaml", workdir / "params_half.yaml"
    cache_dir = workdir / "cache" / "demo"
    _run_to_end(params)  # the first run warms the page cache
    shutil.rmtree(workdir / "cache")
    full_time = _run_to_end(params)
    reference = read_cache(cache_dir / NAME)
    shutil.rmtree(workdir / "cache")
    report = {"kills": 0, "during_shard_write": 0, "during_final_write": 0,
              "during_cleanup": 0, "rounds": 0, "attempts": 0, "problems": []}
    problems: list[str] = report["problems"]
    round_no = 0
    while report["kills"] < min_kills or round_no < 3:
        extend = round_no % 3 == 2  # every third round extends a finished half-manifest cache
        shutil.rmtree(workdir / "cache", ignore_errors=True)
        if extend:
            _run_to_end(half)
        schedule = ["random"] * rng.randint(4, 8) + ["finalize", "cleanup"]
        for k, mode in enumerate([*schedule, "to the end"]):
            # a resumed run has less left to do: kill early enough to land inside it
            delay = rng.uniform(0, 0.003) if mode == "finalize" else rng.uniform(0, full_time / 2)
            report["attempts"] += 1
            when = f"round {round_no} attempt {k} ({mode}, {delay:.3f} s)"
            killed = mode != "to the end" and _attempt(params, cache_dir, mode, delay)
            if mode == "to the end":
                _run_to_end(params)
            if not killed:
                break
            report["kills"] += 1
            state = _check_files(cache_dir, problems, when)
            report["during_shard_write"] += state["shard_tmp"]
            report["during_final_write"] += state["final_tmp"]
            report["during_cleanup"] += state["final"] and state["parts"]
        leftovers = sorted(str(p.relative_to(cache_dir)) for p in cache_dir.iterdir()
                           if p.name != NAME)
        if leftovers:
            problems.append(f"round {round_no}: left behind after completion: {leftovers}")
        cache = read_cache(cache_dir / NAME)
        if cache.ids != reference.ids or len(set(cache.ids)) != len(cache.ids):
            problems.append(f"round {round_no}: ids differ from the uninterrupted run")
        elif not (np.array_equal(cache.offsets, reference.offsets)
                  and np.array_equal(cache.features, reference.features)):
            problems.append(f"round {round_no}: features differ from the uninterrupted run")
        round_no += 1
    report["rounds"] = round_no
    report["full_run_seconds"] = full_time
    return report


if __name__ == "__main__":
    out = main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(out))
