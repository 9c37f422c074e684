"""Resume driver for test_train_resume.py: `amid-train` stopped at exact points, then rerun.

Run as a script: `python resume_driver.py PARAMS SCENARIOS.json WORKDIR`. Each scenario
(a JSON object: name, method, `--set` overrides, `--sweep` axes, and a list of stops
[signal, AMID_FAULT point]) is trained three ways, each command in a forked child
running the real CLI (`amid.distill.cli.app`):

- straight: one uninterrupted run;
- stopped: the same command once per stop, the child stopping itself with that signal
  at that point (amid.faults: SIGKILL, SIGTERM, or SIGINT, which Python turns into
  KeyboardInterrupt as Ctrl-C would), then once more without a fault;
- finished again: the same command once more on the finished folder.

A stacked sweep checkpoints every epoch here (`SAVE_EVERY_S` 0), so a stop between
two epochs resumes mid-run as a lone run does. The driver reports, per scenario, how
each child ended and which files (dvclive's timed logs and the lock aside) differ in
bytes from the straight run's after the resume and after the rerun of the finished run.
Forking after one warm-up run (`warm_up`) avoids paying the imports and set-up of a
first run per child. Prints one JSON report.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import amid.distill.methods  # noqa: F401  (the CLI imports these lazily)
import amid.distill.sweep  # noqa: F401
import amid.distill.train as train_module
from amid.distill.cli import app

SKIPPED = ("dvclive", ".lock")


def run(argv: list[str], fault: str | None, log: Path) -> str:
    """One CLI run in a forked child: "ok", "exit N" or "signal NAME"."""
    pid = os.fork()
    if pid == 0:
        # SIGINT raises KeyboardInterrupt, as Ctrl-C at a terminal does, even where the
        # suite was started in the background (`cmd &`), which leaves SIGINT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        if fault:
            os.environ["AMID_FAULT"] = fault
        else:
            os.environ.pop("AMID_FAULT", None)
        train_module.SAVE_EVERY_S = 0.0
        try:
            app(argv, prog_name="amid-train")
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        except KeyboardInterrupt:
            os._exit(130)
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.waitstatus_to_exitcode(status)
    return "ok" if code == 0 else f"exit {code}"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Each file's bytes, the folder's own path in them (sweep.json's) replaced."""
    return {str(p.relative_to(folder)): p.read_bytes().replace(str(folder).encode(), b"<out>")
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(s in p.parts or p.name == s for s in SKIPPED)}


def differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def scenario(params: Path, spec: dict, workdir: Path) -> dict:
    def argv(out: Path) -> list[str]:
        args = ["--method", spec["method"], "--params", str(params), "--out", str(out), "-q"]
        for item in spec.get("sets", []):
            args += ["--set", item]
        for axis in spec.get("sweep", []):
            args += ["--sweep", axis]
        return args

    base = workdir / spec["name"]
    base.mkdir(parents=True)
    log = base / "log.txt"
    straight, stopped = base / "straight", base / "stopped"
    report: dict = {"name": spec["name"], "straight": run(argv(straight), None, log)}
    report["stops"] = [run(argv(stopped), f"{point}:{sig}", log) for sig, point in spec["stops"]]
    report["strays_after_stops"] = sorted(p.name for p in stopped.rglob(".*.tmp"))
    report["resumed"] = run(argv(stopped), None, log)
    report["strays_after_resume"] = sorted(p.name for p in stopped.rglob(".*.tmp"))
    reference, resumed = snapshot(straight), snapshot(stopped)
    report["files"] = sorted(reference)
    report["differ_after_resume"] = differences(reference, resumed)
    report["again"] = run(argv(stopped), None, log)
    report["differ_after_rerun"] = differences(resumed, snapshot(stopped))
    report["log"] = log.read_text()[-3000:]
    return report


def warm_up(params: Path, workdir: Path) -> None:
    """One short run here first: what a run imports and sets up lazily (dvclive's dvc,
    torch's optimiser and dispatch set-up) is then done once, not once per child.
    Single-threaded (OMP_NUM_THREADS=1), so the forked children inherit no thread pool;
    the one thread left is dvclive's idle Studio poster, waiting on its own queue."""
    import threading

    import torch

    torch.set_num_threads(1)
    try:
        app(["--method", "baseline", "--params", str(params), "--out", str(workdir / "warm-up"),
             "-q", "--set", "train.epochs=1"], prog_name="amid-train")
    except SystemExit as exc:
        assert not exc.code, f"the warm-up run failed ({exc.code})"
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    assert all(t.daemon and "worker" in t.name for t in others), others  # safe to fork


def main(params: Path, scenarios: list[dict], workdir: Path) -> list[dict]:
    warm_up(params, workdir)
    return [scenario(params, spec, workdir) for spec in scenarios]


if __name__ == "__main__":
    specs = json.loads(Path(sys.argv[2]).read_text())
    print(json.dumps(main(Path(sys.argv[1]), specs, Path(sys.argv[3]))))
