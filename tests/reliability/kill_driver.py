"""Crash driver for test_extract_faults.py: `amid-extract run` killed at exact points.

Run as a script: `python kill_driver.py WORKDIR`. WORKDIR holds `params.yaml`
(the full manifest) and `params_half.yaml` (its first half).

Each scenario runs the real CLI (`amid.extract.cli.app`) in a forked child
with `AMID_FAULT` set (amid.faults), so the child SIGKILLs itself at one exact
point of the write path: inside a shard's write, after a shard is written but
before its rename, inside the final merge, after it but before its rename,
inside the cleanup of the shards. Nothing depends on timing, however busy the
machine. After the kill the driver records what is on disk (names, with the
writer's pid replaced by PID) and which `.h5` files open, then reruns without
a fault and records how many samples that run extracted and whether the
cache is byte-identical to an uninterrupted run's. Forking avoids paying the
~3 s torch import per run; the driver itself runs no torch operation, so
forking it is safe. Prints one JSON report on stdout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import h5py

import amid.extract.extractors  # noqa: F401  (the CLI imports these lazily)
import amid.extract.run  # noqa: F401
import amid.manifest  # noqa: F401
from amid.extract.cli import app

NAME = "visual__pixels.h5"
# (scenario, AMID_FAULT, whether a finished half-manifest cache exists first)
SCENARIOS = [
    ("inside the 3rd shard write", "shard-writing:3", False),
    ("5th shard written, not renamed", "shard-written:5", False),
    ("inside the final merge", "final-writing", False),
    ("merge written, not renamed", "final-written", False),
    ("inside the cleanup of the shards", "cleanup", False),
    ("extension: inside the 2nd shard write", "shard-writing:2", True),
    ("extension: inside the final merge", "final-writing", True),
]


def _child(argv: list[str], fault: str | None, stdout: Path) -> None:
    out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(out, 1)
    os.dup2(null, 2)
    if fault:
        os.environ["AMID_FAULT"] = fault
    else:
        os.environ.pop("AMID_FAULT", None)
    try:
        app(argv, prog_name="amid-extract")
    except SystemExit as exc:
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    except BaseException:
        os._exit(3)
    os._exit(0)


def run(params: Path, fault: str | None, stdout: Path) -> str:
    """One CLI run in a forked child: "killed", "ok", or "exit N"."""
    argv = ["run", "-m", "visual", "--params", str(params), "--shard-size", "1"]
    pid = os.fork()
    if pid == 0:
        _child(argv, fault, stdout)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "killed" if os.WTERMSIG(status) == 9 else f"signal {os.WTERMSIG(status)}"
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else f"exit {code}"


def listing(cache_dir: Path) -> list[str]:
    """Every file and folder under the cache folder, writer pids replaced by PID."""
    names = [str(p.relative_to(cache_dir)) for p in sorted(cache_dir.rglob("*"))]
    return [re.sub(r"\.\d+\.tmp$", ".PID.tmp", n) for n in names]


def unreadable(cache_dir: Path) -> list[str]:
    """Non-temporary .h5 files that do not open (there must be none)."""
    bad = []
    for path in cache_dir.rglob("*.h5"):
        try:
            with h5py.File(path, "r") as f:
                f["ids"].asstr()[...]
        except Exception as exc:  # the very thing this driver looks for
            bad.append(f"{path.name}: {exc}")
    return bad


def extracted(stdout: Path) -> int | None:
    match = re.search(r"\((\d+) extracted now\)", stdout.read_text())
    return int(match.group(1)) if match else None


def main(workdir: Path) -> dict:
    params, half = workdir / "params.yaml", workdir / "params_half.yaml"
    cache_dir = workdir / "cache" / "demo"
    log = workdir / "stdout.txt"
    assert run(params, None, log) == "ok"
    reference = (cache_dir / NAME).read_bytes()
    shutil.rmtree(workdir / "cache")
    assert run(half, None, log) == "ok"
    half_bytes = (cache_dir / NAME).read_bytes()
    report = {"scenarios": []}
    for label, fault, extend in SCENARIOS:
        shutil.rmtree(workdir / "cache", ignore_errors=True)
        if extend:
            assert run(half, None, log) == "ok"
        outcome = run(params, fault, log)
        final = cache_dir / NAME
        entry = {
            "scenario": label, "fault": fault, "outcome": outcome,
            "after_kill": listing(cache_dir), "unreadable": unreadable(cache_dir),
            "final_is_reference": final.exists() and final.read_bytes() == reference,
            "final_is_half": final.exists() and final.read_bytes() == half_bytes,
        }
        entry["resume"] = run(params, None, log)
        entry["resumed_extracted"] = extracted(log)
        entry["after_resume"] = listing(cache_dir)
        entry["resumed_is_reference"] = (cache_dir / NAME).read_bytes() == reference
        report["scenarios"].append(entry)
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
