"""The demo's `dvc repro` from clean copies of two revisions, side by side: wall and CPU time.

    python bench/demo_repro.py                      # HEAD~ against the working tree
    python bench/demo_repro.py --base 1425dc2 --repeats 3
    python bench/demo_repro.py --base HEAD --new HEAD --repeats 2   # one revision, twice

Each revision is copied into a temporary folder (`git archive` of a commit; the
working tree's tracked and untracked-but-not-ignored files for `--new WORKTREE`),
turned into a fresh git repository as a clone would be, and reproduced with
`dvc repro` from nothing (no DVC cache). Each copy runs ITS OWN code: the
installed package is editable and points at the development folder, so the
copy's `amid` packages are put first on the import path (a `sitecustomize` that
maps `amid`, `amid.extract`, ... to the copy's folders, read from the copy's
pyproject.toml) and its console scripts first on PATH. Runs alternate between
the revisions (base, new, base, new, ...) so a change in the machine's load
falls on both.

Printed per revision: wall time and CPU time (user + sys of `dvc repro` and
every process it waited for), min / median over the repeats, the slowest
stages, and the ratios base / new. With two or more runs of a revision, its
runs' `metrics/` and `reports/` are compared byte for byte (the pipeline must
be deterministic). The machine (CPU model, cores) and its load average before
and after are printed too: only figures measured in one run are comparable.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKTREE = "WORKTREE"

SITECUSTOMIZE = '''\
# Written by bench/demo_repro.py: this copy's packages before the installed (editable) ones,
# and each process's CPU time at exit (the stages' own share, whatever else the machine runs).
import atexit
import importlib.util
import json
import os
import resource
import sys

_MAP = {mapping!r}


class _CopyFirst:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        folder = _MAP.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder + "/__init__.py", submodule_search_locations=[folder])


sys.meta_path.insert(0, _CopyFirst)


def _cpu():
    log = os.environ.get("DEMO_REPRO_CPU_LOG")
    if log:
        cpu = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))
        import tempfile  # here: not loaded into every process's start

        # a fresh name per process: on a busy machine a pid comes round again within a run
        fd, _ = tempfile.mkstemp(prefix=f"{{os.getpid()}}-", dir=log)
        with os.fdopen(fd, "w") as f:
            json.dump({{"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "cpu": cpu}}, f)


atexit.register(_cpu)
'''

SCRIPT = '''#!{python}
import sys
from {module} import {function}
sys.exit({function}())
'''


@dataclass
class Run:
    wall: float
    cpu: float
    stages: dict[str, float] = field(default_factory=dict)  # wall, from DVC's output
    stage_cpu: dict[str, float] = field(default_factory=dict)  # its processes' own CPU
    folder: Path | None = None
    skipped: list[str] = field(default_factory=list)  # stages DVC found up to date


def sh(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def export(rev: str, dest: Path) -> str:
    """A clean copy of `rev` (or of the working tree) in `dest`, as a fresh git repository;
    returns a label for the table."""
    dest.mkdir(parents=True)
    if rev == WORKTREE:
        files = sh("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                   cwd=ROOT).split("\0")
        for name in filter(None, files):
            src = ROOT / name
            if src.is_file():  # a file deleted in the tree but still in the index is skipped
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
        label = f"working tree (on {sh('git', 'rev-parse', '--short', 'HEAD', cwd=ROOT).strip()})"
    else:
        commit = sh("git", "rev-parse", "--short", rev, cwd=ROOT).strip()
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        label = f"{rev} ({commit})"
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm",
                  "copy"]):
        sh("git", *args, cwd=dest)
    return label


def shim(copy: Path, where: Path) -> dict[str, str]:
    """Environment that runs the copy's own packages and console scripts."""
    import tomllib  # Python 3.11+, as the project

    project = tomllib.loads((copy / "pyproject.toml").read_text(encoding="utf-8"))
    dirs = project["tool"]["setuptools"]["package-dir"]
    mapping = {name: str(copy / folder) for name, folder in dirs.items()}
    (where / "bin").mkdir(parents=True)
    (where / "sitecustomize.py").write_text(SITECUSTOMIZE.format(mapping=mapping))
    for script, target in project["project"]["scripts"].items():
        module, function = target.split(":")
        path = where / "bin" / script
        path.write_text(SCRIPT.format(python=sys.executable, module=module, function=function))
        path.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{where / 'bin'}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(where), env.get("PYTHONPATH")]))
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def repro(rev: str, work: Path, k: int) -> tuple[str, Run]:
    folder = work / f"{k}"
    label = export(rev, folder / "repo")
    env = shim(folder / "repo", folder / "shim")
    (folder / "cpu").mkdir()
    env["DEMO_REPRO_CPU_LOG"] = str(folder / "cpu")
    stages: dict[str, float] = {}
    commands: dict[str, str] = {}
    cpu0, t0 = children_cpu(), time.monotonic()
    proc = subprocess.Popen(["dvc", "repro"], cwd=folder / "repo", env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    current, since, lines, skipped = None, t0, [], []
    for line in proc.stdout:  # stage wall times from DVC's own "Running stage" lines
        lines.append(line)
        hit = re.match(r"Running stage '([^']+)'", line)
        # a stage whose deps and committed outputs (metrics/, reports/: cache: false) match
        # dvc.lock does not run: in a clean copy, the scoring stages of byte-identical runs
        unchanged = re.match(r"Stage '([^']+)' didn't change, skipping", line)
        if unchanged:
            skipped.append(unchanged.group(1))
        if current is not None and line.startswith("> "):
            commands[" ".join(shlex.split(line[2:]))] = current
        if hit:
            now = time.monotonic()
            if current is not None:
                stages[current] = now - since
            current, since = hit.group(1), now
    rc = proc.wait()
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    if current is not None:
        stages[current] = t0 + wall - since
    if rc != 0:
        sys.exit(f"dvc repro of {label} failed (exit {rc}) in {folder / 'repo'}:\n"
                 + "".join(lines[-30:]))
    stage_cpu: dict[str, float] = {}
    for log in (folder / "cpu").iterdir():  # one file per process of the copy's code
        data = json.loads(log.read_text())
        stage = commands.get(" ".join(data["argv"]))
        if stage is not None:
            stage_cpu[stage] = stage_cpu.get(stage, 0.0) + data["cpu"]
    return label, Run(wall, cpu, stages, stage_cpu, folder / "repo", skipped)


def same_outputs(a: Path, b: Path) -> list[str]:
    """Files of metrics/ and reports/ that differ between two runs (empty: identical)."""
    diffs: list[str] = []

    def walk(cmp: filecmp.dircmp, prefix: str) -> None:
        diffs.extend(f"{prefix}{n}" for n in cmp.left_only + cmp.right_only + cmp.funny_files)
        _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files,
                                               shallow=False)
        diffs.extend(f"{prefix}{n}" for n in mismatch + errors)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    for top in ("metrics", "reports"):
        walk(filecmp.dircmp(a / top, b / top), f"{top}/")
    return diffs


def machine() -> str:
    from train import cpu_model  # bench/train.py, beside this script

    return f"{cpu_model()}, {os.cpu_count()} cores"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD~", help="revision to compare (default HEAD~)")
    ap.add_argument("--new", default=WORKTREE, help="revision to compare it with (default: "
                    "the working tree, tracked and untracked-not-ignored files)")
    ap.add_argument("--repeats", type=int, default=1, help="dvc repro runs per revision")
    ap.add_argument("--keep", action="store_true", help="keep the copies (their path is "
                    "printed)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo_repro_"))
    print(f"machine: {machine()}; load average before: {load()}", flush=True)
    runs: dict[str, list[Run]] = {"base": [], "new": []}
    labels: dict[str, str] = {}
    try:
        for k in range(args.repeats):
            for side, rev in (("base", args.base), ("new", args.new)):
                labels[side], run = repro(rev, work / side, k)
                runs[side].append(run)
                print(f"  {side} run {k + 1}: {run.wall:7.1f} s wall, {run.cpu:7.1f} s CPU "
                      f"(load {load()})", flush=True)
        print(f"load average after: {load()}")
        report(runs, labels)
    finally:
        if args.keep:
            print(f"copies kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, list[Run]], labels: dict[str, str]) -> None:
    def mm(values: list[float]) -> str:
        return f"{min(values):7.1f} / {statistics.median(values):7.1f}"

    print(f"\n{'dvc repro, s (min / median)':<44} {'wall':>17} {'CPU (user+sys)':>17}")
    for side in ("base", "new"):
        rs = runs[side]
        print(f"{labels[side]:<44} {mm([r.wall for r in rs]):>17} {mm([r.cpu for r in rs]):>17}")
    for what in ("wall", "cpu"):
        b = statistics.median(getattr(r, what) for r in runs["base"])
        n = statistics.median(getattr(r, what) for r in runs["new"])
        print(f"ratio base / new, {what} (medians): {b / n:.2f}x")
    for side in ("base", "new"):
        walls: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        for r in runs[side]:
            for name, t in r.stages.items():
                walls.setdefault(name, []).append(t)
                cpus.setdefault(name, []).append(r.stage_cpu.get(name, 0.0))
        top = sorted(walls, key=lambda n: -statistics.median(cpus[n]))
        total = statistics.median(sum(r.stage_cpu.values()) for r in runs[side])
        skipped = sorted({n for r in runs[side] for n in r.skipped})
        print(f"\n{side}: {len(walls)} stages ran, their commands' own CPU {total:.1f} s "
              "(the rest of the CPU time is DVC's); by CPU (median, s):")
        if skipped:
            print(f"  up to date, not run (dvc.lock and the committed outputs agree): "
                  f"{', '.join(skipped)}")
        for name in top[:10]:
            cpu, wall = statistics.median(cpus[name]), statistics.median(walls[name])
            print(f"  {cpu:7.1f} CPU {wall:7.1f} wall  {name}")
        if len(runs[side]) > 1:
            diffs = same_outputs(runs[side][0].folder, runs[side][1].folder)
            print(f"  metrics/ and reports/ of runs 1 and 2: "
                  f"{'byte for byte the same' if not diffs else 'DIFFER: ' + ', '.join(diffs)}")


if __name__ == "__main__":
    main()
