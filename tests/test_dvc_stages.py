"""dvc.yaml with every shipped configuration: each is a complete drop-in for `dvc repro`.

DVC resolves the pipeline against the params file exactly as `dvc repro` would
(interpolation of `${...}`, foreach over methods, modalities and sweeps), and
every params key a stage depends on must exist in that file: a missing one is
what makes `dvc repro` stop with "Parameters ... are missing". The file must
also load with the project's own strict configuration.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from repo_data import DEMO_PARAMS  # tests/extract/fixtures, on pytest's pythonpath

from amid.config import load_config
from amid.distill.methods import check_method_options

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [DEMO_PARAMS, *sorted((ROOT / "configs").glob("*.yaml"))]  # the committed ones


def _lookup(params: dict, dotted: str) -> object:
    node: object = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"lacks {dotted}"
        node = node[part]
    return node


def _project(tmp_path: Path, params: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copy(ROOT / "dvc.yaml", proj / "dvc.yaml")
    shutil.copy(params, proj / "params.yaml")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=proj, check=True)
    return proj


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_each_configuration_is_a_complete_drop_in(tmp_path, config):
    from dvc.repo import Repo

    load_config(config, check=check_method_options)  # the project's own strict reading
    params = yaml.safe_load(config.read_text())
    proj = _project(tmp_path, config)
    stages = Repo(str(proj)).index.stages  # DVC's own resolution of dvc.yaml
    names = {s.name.split("@")[0] for s in stages}
    assert {"manifest", "extract", "train", "evaluate", "report"} <= names
    # one train stage per method trains all its seeds (train.seed and
    # pipeline.repeat_seeds) as one stack into runs/<method>; one evaluate stage scores them
    methods = params["pipeline"]["methods"]
    by_name = {s.name: s for s in stages}
    for method in methods:
        train, evaluate = by_name[f"train@{method}"], by_name[f"evaluate@{method}"]
        assert f"--method {method} --repeat-seeds -o runs/{method}" in train.cmd
        assert [str(o) for o in train.outs] == [f"runs/{method}"]
        read = {k for d in train.deps for k in (getattr(d, "params", None) or [])}
        assert {"train", f"methods.{method}", "pipeline.repeat_seeds"} <= read
        assert evaluate.cmd.startswith(f"amid-evaluate run runs/{method} ")
        assert f"runs/{method}" in {str(d) for d in evaluate.deps}
    assert not [n for n in names if n.endswith("-seed")]  # no stage per (method, seed)
    for stage in stages:
        for dep in stage.deps:
            for key in getattr(dep, "params", None) or []:
                try:
                    _lookup(params, key)
                except AssertionError:
                    pytest.fail(f"{config.name}: stage {stage.name} reads {key}, which "
                                "the file does not have")
    trained = {s.name.split("@")[1] for s in stages if s.name.startswith("train@")}
    assert trained == set(params["pipeline"]["methods"])
    # the demo is generated only where the configuration asks for it
    generates = any(s.name.startswith("generate@") for s in stages)
    assert generates == (params["dataset"]["adapter"] == "demo")


def test_every_code_dependency_exists(tmp_path):
    """Every code file or folder a stage depends on is in the repository (a renamed module
    left in dvc.yaml would make `dvc repro` stop on a missing dependency)."""
    from dvc.repo import Repo

    proj = _project(tmp_path, DEMO_PARAMS)  # not the working params.yaml (users replace it)
    code = 0
    for stage in Repo(str(proj)).index.stages:
        for dep in stage.deps:
            path = Path(dep.fs_path)
            rel = path.relative_to(proj) if path.is_relative_to(proj) else None
            if rel is not None and rel.parts[0] in {"amid", "extract", "distill", "evaluate"}:
                code += 1
                assert (ROOT / rel).exists(), f"{stage.name}: dep {rel} does not exist"
    assert code  # the stages do list code deps
