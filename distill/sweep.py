"""`amid-train --sweep/--grid`: a grid of configurations in one process, a run folder each.

A grid is the cartesian product of axes, each a dotted key and a list of values
(inline, from a YAML file, or `sweeps.NAME` of params.yaml: `amid-train --help`).
Every member's configuration is checked before anything trains. Members land in
`<out>/<name>/` (named from the axis values, e.g. `alpha=1,seed=0`), each a
complete run folder; `<out>/sweep.json` lists them and how they trained.

Members that differ only in `per_member` values train together as one stack
(`amid.distill.stack`; every method can be stacked); the others run one after
another through the same loop, sharing the loaded data (other shapes, samples
missing an auxiliary modality, checkpoints stopped after different epochs).
Rerunning resumes every member. A member equal to a finished run under a `reuse`
folder is a copy of it (`amid.distill.reuse`): dvc.yaml's grids reuse their
method's own runs, so the alpha grid's alpha=4 row is the amid row of the main table.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amid.config import Config, TrainConfig, load_config
from amid.distill.checkpoint import flatten_config, read_torch_file
from amid.distill.methods import check_method_options
from amid.distill.methods.base import method_class
from amid.distill.reuse import candidates, finished_as, reuse_folders, take_over
from amid.distill.runstate import run_config
from amid.distill.subsample import train_rows_for
from amid.distill.train import data_from_config, resolve_device, train_members
from amid.errors import AmidError, ConfigError
from amid.schema import parse_yaml, per_member_keys, to_dict
from amid.storage import write_json

log = logging.getLogger("amid.distill")


@dataclass
class GridPoint:
    """One point of a sweep's grid: the axis values it sets and its checked configuration."""

    name: str
    overrides: dict[str, Any]
    cfg: Config
    run: Path


@dataclass
class Result:
    run: Path
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    mode: str = "alone"  # "stacked", "alone" or "reused" (a copy of a finished run)
    source: Path | None = None  # the run folder a reused member was copied from


def parse_axes(specs: list[str]) -> list[tuple[str, list[Any]]]:
    """Axes from `key=[v1, v2]` strings and YAML grid files, in the order given."""
    axes: list[tuple[str, list[Any]]] = []
    for spec in specs:
        if "=" in spec:
            key, raw = spec.split("=", 1)
            try:
                value = parse_yaml(raw)
            except yaml.YAMLError as exc:
                raise ConfigError(f"--sweep {spec!r}: the values are not YAML ({exc})") from None
            axes.append((key.strip(), value if isinstance(value, list) else [value]))
            continue
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--sweep {spec!r}: neither key=[values] nor an existing YAML file")
        try:
            data = parse_yaml(path.read_text(encoding="utf-8"))
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
    """Axes of a grid mapping, keys nested or dotted: `{train: {seed: [0, 1]}, a.b: 2}` gives
    `[("train.seed", [0, 1]), ("a.b", [2])]` (a lone value: an override for every member).
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
    parts = [f"{tail if tails.count(tail) == 1 else key}="
             f"{value if isinstance(value, str) else json.dumps(value)}"
             for (key, value), tail in zip(assign.items(), tails, strict=True)]
    return ",".join(parts).replace("/", "_").replace(" ", "") or "default"


def expand(params: Path, overrides: list[str], axes: list[tuple[str, list[Any]]],
           out: Path, name_of: Callable[[dict[str, Any]], str] = member_name) -> list[GridPoint]:
    """Every member's checked configuration (`name_of`: its folder name from its axis
    values); errors name the member."""
    members: list[GridPoint] = []
    keys = [k for k, _ in axes]
    for combo in itertools.product(*[v for _, v in axes]):
        assign = dict(zip(keys, combo, strict=True))
        extra = [f"{k}={json.dumps(v)}" for k, v in assign.items()]
        name = name_of(assign)
        try:
            cfg = load_config(params, [*overrides, *extra], check=check_method_options)
        except ConfigError as exc:
            raise ConfigError(f"sweep member {name}: {exc}") from None
        if any(m.name == name for m in members):
            raise ConfigError(f"the grid has the point {name} twice (a value repeated in "
                              f"{', '.join(keys)}); each member needs its own run folder")
        members.append(GridPoint(name, assign, cfg, out / name))
    return members


def stack_key(method: str, cfg: Config) -> str:
    """Members with equal keys may share a stack: everything but per-member values."""
    cls = method_class(method, cfg.methods.get(method))  # a variant: the method it trains
    free = set(per_member_keys(TrainConfig, "train")) | set(
        per_member_keys(cls.Options, f"methods.{method}"))
    flat = flatten_config(run_config(cfg, method))
    return json.dumps({k: v for k, v in flat.items() if k not in free}, sort_keys=True,
                      default=str)


def _data_key(cfg: Config) -> str:
    d = to_dict(cfg)
    return json.dumps([d["dataset"], d["extract"], d["train"]["max_steps"], d["train"]["device"]],
                      sort_keys=True, default=str)


def _epoch_done(run: Path) -> int:
    ckpt = run / "checkpoint.pt"
    return int(read_torch_file(ckpt)["epoch"]) if ckpt.exists() else 0


def run_sweep(method: str, params: Path, overrides: list[str], axes: list[tuple[str, list[Any]]],
              out: Path, *, live: bool = True,
              name_of: Callable[[dict[str, Any]], str] = member_name,
              reuse: Sequence[Path] = ()) -> dict[str, Result]:
    """Train every member of the grid; raises AmidError after the rest if any member failed.

    `axes` from `parse_axes` and/or `grid_axes`; `name_of` names the members' folders; a
    member identical to a finished run under a `reuse` folder is copied, not trained.
    """
    members = expand(params, overrides, axes, out, name_of)
    reuse = reuse_folders(list(reuse))  # a missing folder refused before anything loads
    datas: dict[str, Any] = {}
    results: dict[str, Result] = {}

    def data_for(cfg: Config) -> Any:
        key = _data_key(cfg)
        if key not in datas:
            datas[key] = data_from_config(cfg, resolve_device(cfg.train.device))
        return datas[key]

    before = _earlier_members(out)
    sources = candidates(reuse)
    for m in members:
        taken = _reused(method, m, data_for, sources, before.get(m.name))
        if taken is not None:
            results[m.name] = taken
    groups: dict[tuple[str, int], list[GridPoint]] = {}  # same shapes and progress: a stack
    for m in members:
        if m.name not in results:
            groups.setdefault((stack_key(method, m.cfg), _epoch_done(m.run)), []).append(m)
    for group in groups.values():
        data = data_for(group[0].cfg)
        reason = None if len(group) < 2 else _why_not(method, group, data)
        if reason is not None:
            log.warning("sweep members %s train one after another: %s",
                        ", ".join(m.name for m in group), reason)
        for batch in [group] if reason is None else [[m] for m in group]:
            mode = "stacked" if len(batch) > 1 else "alone"
            try:
                done = train_members(method, [m.cfg for m in batch], [m.run for m in batch],
                                     data=data, live=live, stacked=len(batch) > 1)
                for m, d in zip(batch, done, strict=True):
                    results[m.name] = Result(m.run, d.history, d.error, mode)
            except AmidError as exc:
                for m in batch:
                    results[m.name] = Result(m.run, [], str(exc), mode)
                    log.warning("sweep member %s failed: %s", m.name, exc)
    done = {m.name: results[m.name] for m in members}  # the grid's order
    summary = [{"name": m.name, "overrides": m.overrides, "run": str(m.run), "mode": r.mode,
                "epochs": len(r.history), "error": r.error,
                "reused_from": str(r.source) if r.source else None}
               for m, r in zip(members, done.values(), strict=True)]
    write_json(out / "sweep.json", {"method": method, "axes": dict(axes), "members": summary})
    failed = [f"{s['name']}: {s['error']}" for s in summary if s["error"]]
    if failed:
        raise AmidError(f"{len(failed)} of {len(members)} sweep members failed (the others "
                        f"finished, see {out / 'sweep.json'}):\n" + "\n".join(failed))
    return done


def _reused(method: str, m: GridPoint, data_for: Callable[[Config], Any],
            sources: list[Path], earlier: dict[str, Any] | None) -> Result | None:
    """`m` as a copy of a finished run of `sources`; or, on a rerun, `m` already such a
    copy (its earlier sweep.json entry says so and it still checks out). None: train it."""
    if not sources and not (earlier and earlier.get("mode") == "reused"):
        return None  # nothing to compare with: no data loaded for it here
    config, inputs = run_config(m.cfg, method), data_for(m.cfg).inputs
    epochs = m.cfg.train.epochs
    if (m.run / "checkpoint.pt").exists():  # its own run: resumed as usual, unless a copy
        if earlier and earlier.get("mode") == "reused" and earlier.get("reused_from"):
            history = finished_as(m.run, method, config, inputs, epochs)
            if history is not None:
                return Result(m.run, history, None, "reused", Path(earlier["reused_from"]))
        return None
    for source in sources:
        if finished_as(source, method, config, inputs, epochs) is None:
            continue
        try:
            history = take_over(source, m.run, method, config, inputs, epochs)
        except AmidError as exc:  # a failed copy (full disk): the member fails, others go on
            log.warning("sweep member %s: %s", m.name, exc)
            return Result(m.run, [], str(exc), "reused", source)
        if history is not None:
            log.info("sweep member %s: a copy of the finished run %s (same configuration "
                     "and caches), not trained again", m.name, source)
            return Result(m.run, history, None, "reused", source)
    return None


def _earlier_members(out: Path) -> dict[str, dict[str, Any]]:
    """An earlier sweep.json's members by name (none when absent or unreadable)."""
    try:
        members = json.loads((out / "sweep.json").read_text(encoding="utf-8"))["members"]
        return {m["name"]: m for m in members if isinstance(m, dict) and "name" in m}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_repeats(method: str, params: Path, overrides: list[str], out: Path, *,
                live: bool = True) -> dict[str, Result]:
    """`method` at `train.seed` and at each of `pipeline.repeat_seeds`, as one sweep over
    `train.seed` (one stack), dvc.yaml's `train@<name>`: `<out>/<name>` for `train.seed`
    and `<out>/<name>_seed<k>` for the others, `<name>` being `out`'s folder name (the
    names the report groups into one row and `amid-evaluate run` names metrics by).
    """
    cfg = load_config(params, overrides, check=check_method_options)
    base, repeats = cfg.train.seed, cfg.pipeline.repeat_seeds
    if base in repeats:
        raise ConfigError(f"pipeline.repeat_seeds {repeats} lists train.seed {base}: each "
                          "seed is trained once (the member <name> is train.seed)")
    label = out.name

    def name_of(assign: dict[str, Any]) -> str:
        seed = assign["train.seed"]
        return label if seed == base else f"{label}_seed{seed}"

    return run_sweep(method, params, overrides, [("train.seed", [base, *repeats])], out,
                     live=live, name_of=name_of)


def _why_not(method: str, group: list[GridPoint], data: Any) -> str | None:
    """Why these members cannot share a stack (checked on their training rows)."""
    cls = method_class(method, group[0].cfg.methods.get(method))
    if cls.uses_auxiliary and data.auxiliary and not data.all_aux_present:
        return "some samples miss an auxiliary modality (members would select different rows)"
    sizes = set()
    for m in group:
        rows = train_rows_for(data, m.cfg)
        sizes.add(int((rows if rows is not None else data.splits["train"]).shape[0]))
    if len(sizes) > 1:
        return "the members train on different numbers of samples"
    return None
