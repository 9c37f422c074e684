"""`dvc repro` from a copy of the project, as a user runs it, ONE run shared by every check
here (a module fixture: the whole pipeline costs most of this file's time):

- end to end: each method's metrics at both seeds, the report, the ablation grid, the plots,
  and a second `dvc repro` that runs nothing;
- `dvc status` marks exactly the stages that read a changed key;
- each stage depends on exactly the project modules it runs (issue 24).

The project is the code, dvc.yaml and the demo's committed configuration (`demo_params`,
never the working params.yaml, which users replace), made small: a few samples, two epochs,
methods that cover every kind of training stage (a method without a teacher, the full method
with its teacher and discriminators), each at two seeds, and the demo's own grid. The other
methods add no stage kind, and the training stages depend on the whole `distill` folder, so
they load no file these do not cover; a frozen teacher's runs are checked end to end by
tests/reliability/test_train_resume.py. The `teacher` method's rules (no student block in
its metrics, issue 12; not drawn in the gap plot) are checked on real files by
tests/reliability/test_stage3_measures.py,
tests/evaluate/test_evaluate.py and tests/evaluate/test_report_rules.py. Which stages exist is
dvc.yaml's business: the expected sets below are read from the dvc.lock the run wrote (each
stage's params and outputs), so they follow the pipeline's layout rather than a list kept here.

Stage dependencies. Importing a stage's command module is not enough: most of the project's
imports sit inside functions and only happen when the work runs. So while the fixture's
`dvc repro` runs, a `sitecustomize` module put on PYTHONPATH records, when each Python
process exits, the `amid.*` modules it has loaded (`sys.modules`). A process is matched to its
stage by its command line (DVC's resolved `cmd`), and each module to its file under `amid/`,
`extract/`, `distill/` or `evaluate/` (pyproject.toml's package-dir). The checks fail

- if a stage loaded a file that is outside its `deps` (a folder dep covers the files under
  it): a change to that file would not rerun the stage;
- if a code dep of a stage (file or folder) holds no file that any stage of its kind (its
  `foreach` group) loaded: a change there would rerun the stage for nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from repo_data import demo_params  # tests/extract/fixtures, on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]
CODE = ("amid", "extract", "distill", "evaluate")
COPIED = [*CODE, "configs", "dvc.yaml", ".dvcignore"]
METHODS = ["baseline", "amid"]

HOOK = '''\
import atexit, json, os, sys


def _record():
    names = sorted(n for n in list(sys.modules) if n == "amid" or n.startswith("amid."))
    argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
    with open(os.path.join(os.environ["STAGE_MODULE_LOG"], f"{os.getpid()}.json"), "w") as f:
        json.dump({"argv": argv, "modules": names}, f)


if os.environ.get("STAGE_MODULE_LOG"):
    atexit.register(_record)
'''


def tiny_params() -> dict:
    """The demo's committed configuration, small (see the module docstring)."""
    params = demo_params()
    params["demo"]["n_per_class"] = 8
    params["train"]["epochs"] = 2
    for options in params["methods"].values():  # a frozen teacher must leave student epochs
        if options.get("fixed_teacher"):
            options["teacher_epochs"] = 1
    params["pipeline"]["methods"] = METHODS
    params["pipeline"]["repeat_seeds"] = [1]
    return params


@dataclass
class Project:
    root: Path
    params: dict
    first_repro: str  # the first `dvc repro`'s output
    kinds: dict[str, str]  # stage name -> its kind (the foreach group: train@amid -> train)
    code_deps: dict[str, set[str]]  # stage name -> its code deps (files and folders)
    loaded: dict[str, set[str]]  # stage name -> the project files its processes loaded


def _dvc(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**(env or os.environ), "DVC_NO_ANALYTICS": "1"}  # no network, nothing to report to
    # dvc and the stages' console scripts of the interpreter running the tests, found first on
    # PATH (not through a version manager's shims, which cost a process each)
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent),
                                                env.get("PATH")]))
    out = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                         env=env)
    assert out.returncode == 0, \
        f"dvc {' '.join(args)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


def module_file(name: str, package_dirs: dict[str, str]) -> str | None:
    """`amid.distill.sweep` -> `distill/sweep.py` (None for a module with no file here)."""
    package = max((p for p in package_dirs if name == p or name.startswith(p + ".")), key=len)
    rest = name[len(package) + 1:].replace(".", "/")
    folder = package_dirs[package]
    for candidate in ([f"{folder}/__init__.py"] if not rest else
                      [f"{folder}/{rest}.py", f"{folder}/{rest}/__init__.py"]):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def covered(path: str, deps: set[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in deps)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """The tiny project after one `dvc repro`, with what each stage's processes loaded."""
    from dvc.repo import Repo

    tmp = tmp_path_factory.mktemp("pipeline")
    proj, hook, log = tmp / "proj", tmp / "hook", tmp / "log"
    proj.mkdir(), hook.mkdir(), log.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, proj / name)
    params = tiny_params()
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "STAGE_MODULE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    _dvc("init", "--no-scm", "-q", cwd=proj)
    first = _dvc("repro", cwd=proj, env=env).stdout  # recorded: only this run

    stages = list(Repo(str(proj)).index.stages)
    by_cmd = {" ".join(shlex.split(s.cmd)): s.name for s in stages}
    dirs = {"amid": "amid", **{f"amid.{d}": d for d in CODE[1:]}}  # pyproject's package-dir
    loaded: dict[str, set[str]] = {s.name: set() for s in stages}
    for record in log.glob("*.json"):
        data = json.loads(record.read_text())
        stage = by_cmd.get(" ".join(data["argv"]))
        if stage is not None:  # DVC's own processes load no project module
            loaded[stage] |= {f for f in (module_file(n, dirs) for n in data["modules"]) if f}
    code_deps = {}
    for stage in stages:
        deps = set()
        for dep in stage.deps:
            path = Path(dep.fs_path)
            if not getattr(dep, "params", None) and path.is_relative_to(proj):
                rel = path.relative_to(proj).as_posix()
                if rel.split("/")[0] in CODE:
                    deps.add(rel)
        code_deps[stage.name] = deps
    kinds = {s.name: s.name.split("@")[0] for s in stages}
    return Project(proj, params, first, kinds, code_deps, loaded)


def _changed(proj: Path, params: dict, edit: dict[str, object]) -> set[str]:
    """The stages `dvc status` marks after setting dotted keys (then restored).

    In-process: `dvc status --json` prints exactly what `Repo.status()` returns (dvc's
    CmdDataStatus), without a process and DVC's import per check."""
    from dvc.repo import Repo

    changed = yaml.safe_load(yaml.safe_dump(params))
    for key, value in edit.items():
        *parents, leaf = key.split(".")
        node = changed
        for part in parents:
            node = node[part]
        node[leaf] = value
    (proj / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        with contextlib.chdir(proj), Repo() as repo:  # stage names relative to the cwd
            return set(repo.status())
    finally:
        (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _readers(lock: dict, key: str) -> set[str]:
    """Stages whose dvc.lock entry records a params section holding the dotted `key`."""
    out = set()
    for name, stage in lock["stages"].items():
        read = stage.get("params", {}).get("params.yaml", {})
        if any(key == section or key.startswith(f"{section}.") for section in read):
            out.add(name)
    return out


def _writers(lock: dict, prefix: str) -> set[str]:
    """Stages with an output under `prefix` (a folder such as runs/, or a file)."""
    return {name for name, stage in lock["stages"].items()
            if any(o["path"].startswith(prefix) for o in stage.get("outs", []))}


@pytest.mark.slow
def test_dvc_repro_runs_the_demo_end_to_end(project):
    proj, params = project.root, project.params
    for method in METHODS:
        metrics = json.loads((proj / f"metrics/{method}.json").read_text())
        assert metrics["method"] == method and metrics["dataset"] == "demo"
        assert ("teacher" in metrics) == (method != "baseline")
        student = metrics["student"]
        assert 0.0 <= student["top1"] <= 1.0 and "R@1" in student["retrieval"]
        again = json.loads((proj / f"metrics/{method}_seed1.json").read_text())
        assert (again["method"], again["seed"], metrics["seed"]) == (method, 1, 0)
    report = (proj / "reports/results.md").read_text()  # each method's two seeds: one row
    assert all(f"| {m} (n=2) |" in report for m in METHODS)
    # the ablation grid (params.yaml sweeps.alpha): one stack, grouped over its seeds
    sweep = json.loads((proj / "metrics/sweeps/alpha.json").read_text())
    alphas = params["sweeps"]["alpha"]["grid"]["methods"]["amid"]["alpha"]
    assert list(sweep["groups"]) == [f"alpha={float(a)}" for a in alphas] and len(alphas) == 2
    assert all(g["n"] == 3 and g["seeds"] == [0, 1, 2] for g in sweep["groups"].values())
    modes = {m["mode"] for m in json.loads((proj / "runs/sweeps/alpha/sweep.json").read_text())
             ["members"]}
    assert modes == {"stacked", "reused"}

    # dvc.yaml's plots draw one line per run that pairs a teacher with a trained student,
    # whatever the methods: not baseline (no teacher)
    shown = json.loads(_dvc("plots", "show", "--json", cwd=proj).stdout)["data"]
    gap = next(v for k, v in shown.items() if k.startswith("teacher-student accuracy gap"))
    rows = gap[0]["content"]["data"]["values"]
    paired = {run for m in METHODS if m != "baseline" for run in (m, f"{m}_seed1")}
    assert {r["run"] for r in rows} == paired
    assert len(rows) == len(paired) * params["train"]["epochs"]

    again = _dvc("repro", cwd=proj)
    assert "Running stage" not in again.stdout  # nothing changed, nothing runs


@pytest.mark.slow
def test_dvc_status_marks_exactly_the_stages_that_read_a_changed_key(project):
    # each stage depends on exactly the sections it reads: what trains a method reads its
    # options, every training stage reads train, every evaluation reads evaluate
    proj, params = project.root, project.params
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    trained, scored = _writers(lock, "runs/"), _writers(lock, "metrics/")
    amid = _readers(lock, "methods.amid.alpha")  # amid's runs and the alpha grid (of amid)
    assert amid and amid == _writers(lock, "runs/amid") | _writers(lock, "runs/sweeps/alpha")
    assert _changed(proj, params, {"methods.amid.alpha": 2.0}) == amid
    assert "crd" not in METHODS and _readers(lock, "methods.crd.weight") == set()
    assert _changed(proj, params, {"methods.crd.weight": 0.5}) == set()  # crd is not trained
    assert _readers(lock, "train.lr") == trained
    assert _changed(proj, params, {"train.lr": 0.002}) == trained
    assert scored and _readers(lock, "evaluate.projection") == scored
    assert _changed(proj, params, {"evaluate.projection": "tsne"}) == scored
    visual = _writers(lock, f"cache/demo/visual__{params['extract']['visual']['extractor']}")
    assert len(visual) == 1 and _readers(lock, "extract.visual.batch_size") == visual
    assert _changed(proj, params, {"extract.visual.batch_size": 4}) == visual

    # a re-extraction that gives the same features leaves the cache's bytes (and every
    # stage after it) untouched (last: it leaves the project's params changed)
    before = lock
    params = yaml.safe_load(yaml.safe_dump(params))
    params["extract"]["visual"]["batch_size"] = 4
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = set(re.findall(r"Running stage '([^']+)'", _dvc("repro", cwd=proj).stdout))
    assert ran == visual
    (stage,) = visual
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    out = lambda d: d["stages"][stage]["outs"][0]["md5"]  # noqa: E731
    assert out(lock) == out(before)


@pytest.mark.slow
def test_every_stage_ran_and_was_recorded(project):
    assert {"generate", "manifest", "extract", "train", "evaluate", "sweep", "evaluate-sweep",
            "report"} <= set(project.kinds.values())
    ran = set(re.findall(r"Running stage '([^']+)'", project.first_repro))
    assert ran == set(project.kinds)
    silent = [name for name, files in project.loaded.items() if not files]
    assert not silent, f"no process recorded for {silent} (command lines did not match)"


@pytest.mark.slow
def test_each_stage_depends_on_every_module_it_loads(project):
    missing = {}
    for name, files in project.loaded.items():
        outside = sorted(f for f in files if not covered(f, project.code_deps[name]))
        if outside:
            missing[name] = outside
    assert not missing, "stages that load files outside their deps (add them to dvc.yaml):\n" \
        + "\n".join(f"  {name}: {', '.join(files)}" for name, files in missing.items())


@pytest.mark.slow
def test_no_stage_depends_on_code_it_never_loads(project):
    by_kind: dict[str, set[str]] = {}
    for name, kind in project.kinds.items():
        by_kind.setdefault(kind, set()).update(project.loaded[name])
    dead = {}
    for name, kind in project.kinds.items():
        unused = sorted(d for d in project.code_deps[name]
                        if not any(covered(f, {d}) for f in by_kind[kind]))
        if unused:
            dead[name] = unused
    assert not dead, "code deps no stage of the kind loads (remove them from dvc.yaml):\n" \
        + "\n".join(f"  {name}: {', '.join(files)}" for name, files in dead.items())


def test_module_file_follows_the_package_dirs():
    dirs = {"amid": "amid", "amid.distill": "distill", "amid.extract": "extract"}
    assert module_file("amid", dirs) == "amid/__init__.py"
    assert module_file("amid.config", dirs) == "amid/config.py"
    assert module_file("amid.distill.sweep", dirs) == "distill/sweep.py"
    assert module_file("amid.extract.extractors", dirs) == "extract/extractors/__init__.py"
    assert module_file("amid.distill.no_such_module", dirs) is None
    assert covered("extract/extractors/logmel.py", {"extract/extractors"})
    assert not covered("extract/extractors_old.py", {"extract/extractors"})
