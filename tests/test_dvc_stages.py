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

from amid.config import load_config
from amid.distill.methods import check_method_options

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


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
    pipeline = params["pipeline"]
    repeats = {s.name: s.cmd for s in stages if s.name.startswith("train-seed@")}
    assert sorted(repeats) == sorted(f"train-seed@{m}-{k}" for m in pipeline["methods"]
                                     for k in pipeline["repeat_seeds"])
    for name, cmd in repeats.items():  # each trains its method with its seed, its own folder
        method, seed = name.removeprefix("train-seed@").rsplit("-", 1)
        assert f"--method {method} --set train.seed={seed}" in cmd
        assert f"-o runs/{method}_seed{seed}" in cmd
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


def test_every_code_dependency_exists():
    from dvc.repo import Repo

    for stage in Repo(str(ROOT)).index.stages:
        for dep in stage.deps:
            path = Path(dep.fs_path)
            top = path.relative_to(ROOT).parts[0] if path.is_relative_to(ROOT) else ""
            if top in {"amid", "extract", "distill", "evaluate"}:
                assert path.exists(), f"{stage.name}: dep {path} does not exist"
