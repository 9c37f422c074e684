"""`amid-train --sweep`: a grid of configurations in one process, one run folder per member.

A grid is the cartesian product of axes. An axis is a dotted key and a list of
values, given inline (`--sweep 'train.loss.alpha=[1,2,4]'`, the value parsed
as YAML) or as a YAML file mapping keys to lists (`--sweep grid.yaml`, e.g.
`{train.seed: [0, 1, 2], train.loss.tau: [0.05, 0.1]}`, keys dotted or
nested), or named in params.yaml (`sweeps.NAME`, `--grid NAME`). Every member's
configuration is loaded and checked before anything trains.

Members land in `<out>/<name>/` (name from the axis values, e.g.
`alpha=1,seed=0`), each a complete run folder that `amid-evaluate` reads;
`<out>/sweep.json` lists them with their overrides and how they trained.

Members that differ only in per-member values (`stacked.PER_MEMBER`: seed,
lr, weight_decay, disc_lr, alpha, beta, gamma, jsd, tau, mu) train together
as one stacked ensemble. Everything else runs one member after another
through the plain trainer in the same process, sharing the loaded data:
other methods (crd, gmc, ccl, crcd), `fixed_teacher`, samples missing an
auxiliary modality, axes that change shapes (model sizes, batch size,
epochs, ...), and members whose folder already holds a checkpoint (the
plain trainer resumes or just re-finishes them). A stack keeps its state in
`<out>/stack-<method>-<key>.pt` between epochs (`stack_state`): rerunning
the same command after an interruption resumes it.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from amid.config import Config, load_config, to_dict
from amid.distill.checkpoint import _flatten
from amid.distill.stack_state import state_path
from amid.distill.stacked import PER_MEMBER, MemberResult, train_stack, why_not_stackable
from amid.errors import AmidError, ConfigError

log = logging.getLogger("amid.distill")


@dataclass
class Member:
    name: str
    overrides: dict[str, Any]
    cfg: Config
    run: Path


def parse_axes(specs: list[str]) -> list[tuple[str, list[Any]]]:
    """Axes from `key=[v1, v2]` strings and YAML grid files, in the order given."""
    axes: list[tuple[str, list[Any]]] = []
    for spec in specs:
        if "=" in spec:
            key, raw = spec.split("=", 1)
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError as exc:
                raise ConfigError(f"--sweep {spec!r}: the values are not YAML ({exc})") from None
            axes.append((key.strip(), value if isinstance(value, list) else [value]))
            continue
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--sweep {spec!r}: neither key=[values] nor an existing YAML file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"{path}: a sweep file maps dotted keys to lists of values")
        axes += grid_axes(data, str(path))
    seen: set[str] = set()
    for key, values in axes:
        if not values:
            raise ConfigError(f"--sweep {key}: the list of values is empty")
        if key in seen:
            raise ConfigError(f"--sweep {key}: the key is given twice")
        seen.add(key)
    return axes


def grid_axes(grid: dict[str, Any], where: str) -> list[tuple[str, list[Any]]]:
    """Axes of a grid mapping: keys nest (or are dotted) down to a list of values each.

    `{train: {seed: [0, 1]}, train.loss.alpha: [1, 2]}` gives
    `[("train.seed", [0, 1]), ("train.loss.alpha", [1, 2])]`. A lone value is
    an axis of one (a fixed override for every member).
    """
    axes: list[tuple[str, list[Any]]] = []

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            if not node:
                raise ConfigError(f"{where}: {key or 'the grid'} is an empty mapping")
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif not key:
            raise ConfigError(f"{where}: a grid maps configuration keys to lists of values")
        else:
            axes.append((key, node if isinstance(node, list) else [node]))

    walk(grid, "")
    return axes


def member_name(assign: dict[str, Any]) -> str:
    """`alpha=1,seed=0`: the last key part, the full key where two axes share it."""
    tails = [k.rsplit(".", 1)[-1] for k in assign]
    parts = []
    for (key, value), tail in zip(assign.items(), tails, strict=True):
        label = tail if tails.count(tail) == 1 else key
        text = json.dumps(value) if not isinstance(value, str) else value
        parts.append(f"{label}={text}")
    name = ",".join(parts).replace("/", "_").replace(" ", "")
    return name or "default"


def expand(params: Path, overrides: list[str], axes: list[tuple[str, list[Any]]],
           out: Path) -> list[Member]:
    """Every member's checked configuration; errors name the member's overrides."""
    members = []
    keys = [k for k, _ in axes]
    for combo in itertools.product(*[v for _, v in axes]):
        assign = dict(zip(keys, combo, strict=True))
        extra = [f"{k}={json.dumps(v)}" for k, v in assign.items()]
        try:
            cfg = load_config(params, [*overrides, *extra])
        except ConfigError as exc:
            raise ConfigError(f"sweep member {member_name(assign)}: {exc}") from None
        members.append(Member(member_name(assign), assign, cfg, out / member_name(assign)))
    return members


def _group_key(method: str, cfg: Config) -> str:
    flat = _flatten(to_dict(cfg))
    return json.dumps({k: v for k, v in flat.items() if k not in PER_MEMBER}, sort_keys=True,
                      default=str) + method


def _data_key(cfg: Config) -> str:
    d = to_dict(cfg)
    return json.dumps([d["dataset"], d["extract"], d["train"]["max_steps"], d["train"]["device"]],
                      sort_keys=True, default=str)


def run_sweep(method: str, params: Path, overrides: list[str], axes: list[tuple[str, list[Any]]],
              out: Path, *, live: bool = True) -> dict[str, MemberResult]:
    """Train every member of the grid; raises AmidError after the rest if any member failed.

    `axes` from `parse_axes` (command-line specs) and/or `grid_axes` (a
    `sweeps.NAME.grid` section).
    """
    from amid.distill.train import data_from_config, resolve_device, train

    members = expand(params, overrides, axes, out)
    out.mkdir(parents=True, exist_ok=True)
    datas: dict[str, Any] = {}
    results: dict[str, MemberResult] = {}
    modes: dict[str, str] = {}

    def data_for(cfg: Config) -> Any:
        key = _data_key(cfg)
        if key not in datas:
            datas[key] = data_from_config(cfg, resolve_device(cfg.train.device))
        return datas[key]

    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(_group_key(method, m.cfg), []).append(m)
    for group in groups.values():
        fresh = [m for m in group if not (m.run / "checkpoint.pt").exists()]
        reason = why_not_stackable(method, group[0].cfg, data_for(group[0].cfg))
        if reason is None and len(fresh) >= 2:
            log.info("training %d members of %s as one stack", len(fresh), method)
            runs = [m.run for m in fresh]
            done = train_stack(method, [m.cfg for m in fresh], runs, data_for(fresh[0].cfg),
                               live=live, state=state_path(out, method, runs))
            for m, res in zip(fresh, done, strict=True):
                results[m.name], modes[m.name] = res, "stacked"
        elif len(fresh) >= 2:
            log.warning("sweep members %s train one after another: %s",
                        ", ".join(m.name for m in fresh), reason)
        for m in group:
            if m.name in results:
                continue
            res = MemberResult(m.run)
            try:
                res.history = train(method, m.cfg, m.run, data=data_for(m.cfg), live=live)
            except AmidError as exc:
                res.error = str(exc)
                log.warning("sweep member %s failed: %s", m.name, exc)
            results[m.name], modes[m.name] = res, "sequential"
    summary = [{"name": m.name, "overrides": m.overrides, "run": str(m.run),
                "mode": modes[m.name], "epochs": len(results[m.name].history),
                "error": results[m.name].error} for m in members]
    (out / "sweep.json").write_text(json.dumps({"method": method, "axes": dict(axes),
                                                "members": summary}, indent=2), encoding="utf-8")
    failed = [f"{s['name']}: {s['error']}" for s in summary if s["error"]]
    if failed:
        raise AmidError(f"{len(failed)} of {len(members)} sweep members failed (the others "
                        f"finished, see {out / 'sweep.json'}):\n" + "\n".join(failed))
    return results
