"""Typed configuration sections: dataclasses read strictly from YAML.

The engine under `amid.config` (the project's sections) and each method's
and extractor's own `Options`: a field declares its range check beside it
(`option(default, check=...)`) and whether it may differ between stacked
members (`per_member`); `from_dict` builds a dataclass from a mapping with
unknown keys, wrong types and out-of-range values named by dotted key;
`StrictLoader` reads YAML as YAML 1.2 tools do and refuses duplicate keys;
`apply_override` applies one `--set key=value`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import field
from typing import Any, Literal

import yaml

from amid.errors import ConfigError

Check = tuple[Callable[[Any], bool], str]


def option(default: Any, *, check: Check | None = None, per_member: bool = False) -> Any:
    """A configuration field with its range check beside it.

    `per_member`: the value may differ between the members of one stacked
    sweep (a float read at step time; see `amid.distill.stack`).
    """
    meta = {"check": check, "per_member": per_member}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def at_least(x: float) -> Check:
    return (lambda v: v >= x, f">= {x}")


def above(x: float) -> Check:
    return (lambda v: v > x, f"> {x}")


def in_unit(closed_right: bool = False) -> Check:
    if closed_right:
        return (lambda v: 0 < v <= 1, "in (0, 1]")
    return (lambda v: 0 <= v < 1, "in [0, 1)")


SPLIT: Check = (lambda v: v in ("train", "val", "test"), "one of train, val, test")

# numpy's legacy seeding (and so every library seeded from it) takes [0, 2**32 - 1]
SEED_MAX = 2**32 - 1
SEED: Check = (lambda v: 0 <= v <= SEED_MAX, f"in [0, {SEED_MAX}]")

# A name that becomes one part of a path (`<cache_dir>/<dataset.name>/...`,
# `runs/sweeps/<NAME>`): letters, digits and `_ - . +`, not starting with a dot
# (no `..`, no hidden file), no separator, and short enough to leave room in a
# 255-byte file name for what is added to it.
_COMPONENT = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,99}")
COMPONENT_RULE = ("one folder or file name: letters, digits, _ - . + (not first: .), "
                  "at most 100 characters")


def is_path_component(value: Any) -> bool:
    return isinstance(value, str) and _COMPONENT.fullmatch(value) is not None


def check_path_component(value: Any, where: str) -> None:
    """A `ConfigError` naming `where` unless `value` is one safe path component."""
    if not is_path_component(value):
        raise ConfigError(f"{where} must be {COMPONENT_RULE}, got {value!r}")


PATH_COMPONENT: Check = (is_path_component, COMPONENT_RULE)

# where an unknown dotted key lives now (a sentence), or None: see `from_dict`
Moved = Callable[[str], "str | None"] | None


# ------------------------------------------------------------------ YAML


class StrictLoader(yaml.SafeLoader):
    """YAML as researchers write it: `1e-3` is a number, a key given twice is an error.

    PyYAML follows YAML 1.1, where a float needs a dot (`1e-3` is a string);
    YAML 1.2 and every other tool (DVC's ruamel included) read it as 0.001.
    """


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
               |[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
               |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


_MERGE = "tag:yaml.org,2002:merge"


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose own keys are distinct; merge keys (`<<: *defaults`) as YAML defines them.

    A merge key has no constructor of its own: SafeLoader's `construct_mapping`
    flattens it (the mapping's own keys override the merged ones, which is the
    point of a merge), so only the keys written in this mapping are compared.
    """
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE:
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"line {line}: key {key!r} is given twice in one mapping "
                              f"(first on line {seen[key]}); the first would be silently lost")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)


# ------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _reject_nonfinite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_nonfinite(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _reject_nonfinite(v, f"{where}[{i}]")


def coerce(value: Any, tp: Any, where: str, moved: Moved = None) -> Any:
    """Check `value` against the annotation `tp`, converting where lossless.

    Accepts ints for floats (YAML writes `1` for 1.0) and nothing else loosely:
    "3" is not an int, 1.5 is not an int, "yes" is not a bool. `moved`: see `from_dict`.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:  # free-form (extractor params): checked by their owner, but never NaN
        _reject_nonfinite(value, where)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where, moved)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}"
            )
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{where}[{i}]", moved) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): coerce(v, args[1], f"{where}.{k}", moved) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, moved)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan/.inf pass every range check
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported annotation {tp!r}")  # a bug, not user input


def from_dict(cls: type, data: Any, where: str = "", moved: Moved = None) -> Any:
    """Build dataclass `cls` from a mapping: unknown keys, types and ranges checked, by key.

    `moved(dotted_key)`: for an unknown key, where it lives now (a sentence), or None;
    an old file then fails with the new name instead of "unknown key".
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    for key in unknown:
        dotted = f"{where}.{key}" if where else str(key)
        value = data[key]
        leaves = [f"{dotted}.{k}" for k in value] if isinstance(value, dict) and value else []
        hints_ = [m for m in map(moved, leaves or [dotted]) if m] if moved else []
        if hints_:
            raise ConfigError("; ".join(hints_))
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else str(k) for k in unknown)
        raise ConfigError(f"unknown configuration key(s) {keys}; known here: "
                          f"{', '.join(sorted(fields))}")
    kwargs = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else key
        kwargs[key] = coerce(value, hints[key], dotted, moved)
        check = fields[key].metadata.get("check")
        if check is not None and kwargs[key] is not None and not check[0](kwargs[key]):
            raise ConfigError(f"{dotted} must be {check[1]}, got {kwargs[key]!r}")
    return cls(**kwargs)


def per_member_keys(cls: type, where: str) -> list[str]:
    """Dotted keys of `cls` (and nested dataclasses) marked `per_member`."""
    keys = []
    for f in dataclasses.fields(cls):
        dotted = f"{where}.{f.name}"
        if f.metadata.get("per_member"):
            keys.append(dotted)
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += per_member_keys(tp, dotted)
    return keys


def _merge(node: dict[str, Any], key: str, value: Any) -> None:
    """Set `key`; a mapping merges into an existing mapping instead of replacing it."""
    old = node.get(key)
    if isinstance(value, dict) and isinstance(old, dict):
        for k, v in value.items():
            _merge(old, str(k), v)
    else:
        node[key] = value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` (value parsed as YAML) to a raw mapping.

    A mapping value merges into the section it names (`--set 'train={epochs: 1}'`
    changes epochs and keeps the file's other train keys).
    """
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: not of the form key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: {key.strip()!r} is not a dotted key")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    try:
        value = parse_yaml(raw)
    except yaml.YAMLError as exc:  # e.g. `--set a=[1` or a `!!python/...` tag
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({problem})") from None
    _merge(node, parts[-1], value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved configuration as plain data (stored with every run)."""
    return dataclasses.asdict(cfg)
