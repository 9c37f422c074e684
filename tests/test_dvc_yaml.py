"""dvc.yaml and params.yaml agree: every param a stage lists exists, every dep exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _lookup(params: dict, dotted: str) -> object:
    node: object = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"params.yaml lacks {dotted}"
        node = node[part]
    return node


def _expand(text: str, params: dict, local: dict[str, str]) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name in local:
            return local[name]
        if name.startswith("item."):
            return str(_lookup(yaml.safe_load(local["item_yaml"]), name[5:]))
        return str(_lookup(params, name))

    return re.sub(r"\$\{([^}]+)\}", sub, text)


def _stages(params: dict) -> list[tuple[str, dict]]:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    out = []
    for name, stage in dvc["stages"].items():
        if "foreach" not in stage:
            out.append((name, stage))
            continue
        items = _lookup(params, stage["foreach"][2:-1])
        pairs = items.items() if isinstance(items, dict) else [(i, i) for i in items]
        for key, item in pairs:
            local = {"key": str(key), "item": str(item), "item_yaml": yaml.safe_dump(item)}
            text = _expand(yaml.safe_dump(stage["do"]), params, local)
            out.append((f"{name}@{key}", yaml.safe_load(text)))
    return out


def test_every_stage_param_is_in_params_yaml_and_every_code_dep_exists():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = _stages(params)
    assert {n.split("@")[0] for n, _ in stages} >= {"demo-data", "manifest", "extract", "train",
                                                     "evaluate", "report"}
    for name, stage in stages:
        for key in stage.get("params", []):
            _lookup(params, _expand(key, params, {}))
        for dep in stage.get("deps", []):
            dep = _expand(dep, params, {})
            if dep.split("/")[0] in {"amid", "extract", "distill", "evaluate"}:
                assert (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"
