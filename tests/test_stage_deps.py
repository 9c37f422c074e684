"""Each DVC stage depends on exactly the project modules it runs (issue 24).

Method. Importing a stage's command module is not enough: most of the
project's imports sit inside functions and only happen when the work runs. So
the test runs the real pipeline: a tiny demo project in a temporary folder
(the repository's code folders and dvc.yaml, and the demo's committed
configuration made small: a few samples, two epochs, the methods that cover
every kind of stage), reproduced with `dvc repro`, while a `sitecustomize` module put on
PYTHONPATH records, when each Python process exits, the `amid.*` modules it
has loaded (`sys.modules`). A process is matched to its stage by its command
line (DVC's resolved `cmd`), and each module to its file under `amid/`,
`extract/`, `distill/` or `evaluate/` (pyproject.toml's package-dir). The
test then fails

- if a stage loaded a file that is outside its `deps` (a folder dep covers
  the files under it): a change to that file would not rerun the stage;
- if a code dep of a stage (file or folder) holds no file that any stage of
  its kind (its `foreach` group) loaded: a change there would rerun the
  stage for nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from repo_data import demo_params  # tests/extract/fixtures, on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]
CODE = ("amid", "extract", "distill", "evaluate")
COPIED = [*CODE, "configs", "dvc.yaml", ".dvcignore"]

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
    """The demo's committed configuration, small, covering each kind of stage: a method
    without a teacher, the teacher alone, a frozen pre-trained teacher (kd), the full
    method with its discriminators, each at two seeds; a grid."""
    params = demo_params()
    params["demo"]["n_per_class"] = 8
    params["train"]["epochs"] = 2
    for options in params["methods"].values():
        if options.get("fixed_teacher"):
            options["teacher_epochs"] = 1
    params["pipeline"]["methods"] = ["baseline", "teacher", "kd", "amid"]
    params["pipeline"]["repeat_seeds"] = [1]
    params["sweeps"] = {"alpha": {"method": "amid", "grid": {
        "train": {"seed": [0, 1]}, "methods": {"amid": {"alpha": [0.0]}}}}}
    return params


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
def reproduced(tmp_path_factory) -> tuple[list, dict[str, set[str]]]:
    """(DVC's stages of the tiny project, stage name -> files its processes loaded)."""
    from dvc.repo import Repo

    tmp = tmp_path_factory.mktemp("stage_deps")
    proj, hook, log = tmp / "proj", tmp / "hook", tmp / "log"
    proj.mkdir(), hook.mkdir(), log.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, proj / name)
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    (hook / "sitecustomize.py").write_text(HOOK)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "STAGE_MODULE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=proj, check=True, env=env)
    out = subprocess.run(["dvc", "repro"], cwd=proj, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, f"dvc repro failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"

    stages = list(Repo(str(proj)).index.stages)
    by_cmd = {" ".join(shlex.split(s.cmd)): s.name for s in stages}
    dirs = {"amid": "amid", **{f"amid.{d}": d for d in CODE[1:]}}  # pyproject's package-dir
    loaded: dict[str, set[str]] = {s.name: set() for s in stages}
    for record in log.glob("*.json"):
        data = json.loads(record.read_text())
        stage = by_cmd.get(" ".join(data["argv"]))
        if stage is not None:  # DVC's own processes load no project module
            loaded[stage] |= {f for f in (module_file(n, dirs) for n in data["modules"]) if f}
    return stages, loaded


def _code_deps(stage, proj: Path) -> set[str]:
    deps = set()
    for dep in stage.deps:
        path = Path(dep.fs_path)
        if not getattr(dep, "params", None) and path.is_relative_to(proj):
            rel = path.relative_to(proj).as_posix()
            if rel.split("/")[0] in CODE:
                deps.add(rel)
    return deps


@pytest.mark.slow
def test_every_stage_ran_and_was_recorded(reproduced):
    stages, loaded = reproduced
    kinds = {s.name.split("@")[0] for s in stages}
    assert {"generate", "manifest", "extract", "train", "evaluate", "sweep", "evaluate-sweep",
            "report"} <= kinds
    silent = [name for name, files in loaded.items() if not files]
    assert not silent, f"no process recorded for {silent} (command lines did not match)"


@pytest.mark.slow
def test_each_stage_depends_on_every_module_it_loads(reproduced):
    stages, loaded = reproduced
    missing = {}
    for stage in stages:
        proj = Path(stage.repo.root_dir)
        deps = _code_deps(stage, proj)
        outside = sorted(f for f in loaded[stage.name] if not covered(f, deps))
        if outside:
            missing[stage.name] = outside
    assert not missing, "stages that load files outside their deps (add them to dvc.yaml):\n" \
        + "\n".join(f"  {name}: {', '.join(files)}" for name, files in missing.items())


@pytest.mark.slow
def test_no_stage_depends_on_code_it_never_loads(reproduced):
    stages, loaded = reproduced
    by_kind: dict[str, set[str]] = {}
    for stage in stages:
        by_kind.setdefault(stage.name.split("@")[0], set()).update(loaded[stage.name])
    dead = {}
    for stage in stages:
        used = by_kind[stage.name.split("@")[0]]
        unused = sorted(d for d in _code_deps(stage, Path(stage.repo.root_dir))
                        if not any(covered(f, {d}) for f in used))
        if unused:
            dead[stage.name] = unused
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
