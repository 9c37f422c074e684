"""Typed configuration on pydantic v2: one base model, one error formatter, the YAML side.

Every option (the sections of `params.yaml`, each method's `Options`, each
extractor's `Params`, each adapter's `Options`) is a field of a `Schema` model,
its range beside it: `option(default, ge=..., note=...)`; `per_member=True` marks
a float that may differ between stacked members (`amid.distill.stack`). `load`
turns pydantic's `ValidationError` into one-line `ConfigError`s: the dotted key,
what it must be, the value given; for an unknown key the known ones and the
closest; for an old value (`renamed`) its new name.

`parse_yaml` reads YAML as YAML 1.2 tools (DVC's ruamel) do, so `1e-3` is a
number, and refuses a key given twice; `apply_override` applies one `--set
key=value` to the raw mapping, so `--set` and `dvc exp run -S` fail alike.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from amid.errors import ConfigError


class Schema(BaseModel):
    """A configuration model: unknown keys refused, finite numbers only, no loose types
    ("3" or 1.5 is no int, "yes" no bool; an int is a float where one is meant)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        """An empty YAML section (`train:`) is the defaults; unknown keys all named at once."""
        if data is None:
            return {}
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise PydanticCustomError("unknown_keys", "unknown key(s)", {
                    "keys": unknown, "known": sorted(cls.model_fields),
                    "leaves": {str(k): [str(s) for s in v] for k, v in data.items()
                               if str(k) in unknown and isinstance(v, dict)}})
        return data


def option(default: Any, *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, note: str = "",
           per_member: bool = False) -> Any:
    """A field with its range; `note` follows the range in the error (unit, or why the bound);
    `per_member`: the value may differ between the members of one stacked sweep."""
    extra = {k: v for k, v in (("per_member", per_member), ("note", note)) if v} or None
    fresh = isinstance(default, list | dict | BaseModel)  # each instance its own copy
    value = {"default_factory": lambda: copy.deepcopy(default)} if fresh else {"default": default}
    return Field(**value, ge=ge, gt=gt, le=le, lt=lt, json_schema_extra=extra)


def rule(ok: Callable[[Any], bool], must: str) -> AfterValidator:
    """A check pydantic has no constraint for (`Annotated[T, rule(...)]`): "must be <must>"."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise PydanticCustomError("rule", "must be {must}", {"must": must})
        return value

    return AfterValidator(check)


def renamed(values: dict[str, tuple[str, str]]) -> BeforeValidator:
    """Values of a field that were renamed (`Annotated[T, renamed({old: (new, why)})]`):
    an old file fails in one line naming the new value, never silently means another."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and value in values:
            new, why = values[value]
            raise PydanticCustomError("renamed_value", "{old!r} was renamed {new!r}",
                                      {"old": value, "new": new, "why": why})
        return value

    return BeforeValidator(check)


def _finite(value: Any, at: str = "") -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "expected a finite number",
                                  {"at": at, "value": value})
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{at}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _finite(v, f"{at}[{i}]")
    return value


# free-form data checked by its owner (an extractor's params, a sweep's grid): never NaN
FreeMap = Annotated[dict[str, Any], AfterValidator(_finite)]

# numpy's legacy seeding (and so every library seeded from it) takes [0, 2**32 - 1]
SEED_MAX = 2**32 - 1
Split = Literal["train", "val", "test"]

# A name that becomes one part of a path (`<cache_dir>/<dataset.name>/...`, `runs/sweeps/
# <NAME>`): letters, digits and `_ - . +`, not starting with a dot (no `..`, no hidden
# file), no separator, and short enough to leave room in a 255-byte file name.
_COMPONENT = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,99}")
COMPONENT_RULE = ("one folder or file name: letters, digits, _ - . + (not first: .), "
                  "at most 100 characters")


def is_path_component(value: Any) -> bool:
    return isinstance(value, str) and _COMPONENT.fullmatch(value) is not None


def check_path_component(value: Any, where: str) -> None:
    """A `ConfigError` naming `where` unless `value` is one safe path component."""
    if not is_path_component(value):
        raise ConfigError(f"{where} must be {COMPONENT_RULE}, got {value!r}")


PathComponent = Annotated[str, rule(is_path_component, COMPONENT_RULE)]


def per_member_keys(cls: type[BaseModel], where: str) -> list[str]:
    keys = []  # dotted, nested models included
    for name, info in cls.model_fields.items():
        dotted = f"{where}.{name}"
        if (info.json_schema_extra or {}).get("per_member"):
            keys.append(dotted)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys += per_member_keys(info.annotation, dotted)
    return keys


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The resolved configuration as plain data, fields in declaration order."""
    return cfg.model_dump()


# ------------------------------------------------------------------ errors

# moved(dotted_key): where an unknown key lives now (a sentence), or None, so an old
# file fails with the new name
Moved = Callable[[str], "str | None"] | None
UNKNOWN = "unknown configuration key(s) {keys}; known here: {known}"
_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "list_type": "a list", "dict_type": "a mapping",
             "model_type": "a mapping"}
_BOUNDS = {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}


def _leaf(model: type[BaseModel], loc: tuple) -> tuple[Any, list[Any]]:
    """The annotation at `loc` under `model` (without Optional), and its constraints."""
    tp: Any = model
    meta: list[Any] = []
    for part in (*loc, None):
        while True:  # through Annotated layers (keeping their constraints) and Optional
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            rest = [a for a in args if a is not type(None)]
            if origin is Annotated:
                tp, meta = args[0], [*meta, *args[1:]]
            elif origin in (typing.Union, types.UnionType) and len(rest) == 1:
                tp = rest[0]
            else:
                break
        if part is None:
            break
        if isinstance(tp, type) and issubclass(tp, BaseModel) and str(part) in tp.model_fields:
            info = tp.model_fields[str(part)]
            tp, meta = info.annotation, [*info.metadata, info]
        elif origin in (list, dict):
            tp, meta = args[-1], []
        else:
            return None, []
    return tp, meta


_OPS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _range(meta: list[Any]) -> str:
    """`in [1, 256]`, `> 0`, `in [0, 1)`: the bounds found in a field's constraints."""
    bound = {k: v for m in meta if isinstance(m, annotated_types.BaseMetadata)
             for k in _OPS if (v := getattr(m, k, None)) is not None}
    lo = next((k for k in ("ge", "gt") if k in bound), None)
    hi = next((k for k in ("le", "lt") if k in bound), None)
    if lo and hi:
        left, right = "[" if lo == "ge" else "(", "]" if hi == "le" else ")"
        return f"in {left}{bound[lo]}, {bound[hi]}{right}"
    return f"{_OPS[lo or hi]} {bound[lo or hi]}" if lo or hi else ""


def _note(meta: list[Any]) -> str:
    extras = [getattr(m, "json_schema_extra", None) for m in meta]
    return next((f" {e['note']}" for e in extras if isinstance(e, dict) and e.get("note")), "")


def _message(err: dict[str, Any], model: type[BaseModel], where: str, moved: Moved,
             unknown: str) -> str:
    loc = tuple(err["loc"])
    dotted = where
    for part in loc:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    tp, meta = _leaf(model, loc)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # shown as it was read
    if kind == "unknown_keys":
        full = [f"{dotted}.{k}" if dotted else k for k in ctx["keys"]]
        if moved is not None:  # an old key: say where it lives now
            leaves = [f"{f}.{leaf}" for k, f in zip(ctx["keys"], full, strict=True)
                      for leaf in ctx["leaves"].get(k, [])] or full
            hints = [m for m in map(moved, leaves) if m]
            if hints:
                return "; ".join(hints)
        close = [m for k in ctx["keys"] for m in difflib.get_close_matches(k, ctx["known"], 1)]
        text = unknown.format(keys=", ".join(full), names=", ".join(ctx["keys"]),
                              known=", ".join(ctx["known"]) or "none", where=dotted)
        return text + (f"; did you mean {', '.join(close)}?" if close else "")
    if kind == "literal_error" and typing.get_origin(tp) is Literal:
        allowed = ", ".join(map(repr, typing.get_args(tp)))
        return f"{dotted}: must be one of {allowed}, got {value!r}"
    if kind in _BOUNDS:
        return f"{dotted} must be {_range(meta)}{_note(meta)}, got {value!r}"
    if kind == "rule":
        return f"{dotted} must be {ctx['must']}, got {value!r}"
    if kind == "renamed_value":
        why = f" ({ctx['why']})" if ctx.get("why") else ""
        return f"{dotted}: {ctx['old']!r} was renamed {ctx['new']!r}{why}"
    if kind == "finite_number":  # in a free-form mapping: the key inside it, and its value
        value = ctx.get("value", value)
        return f"{dotted}{ctx.get('at', '')}: expected a finite number, got {value!r}"
    if kind in _EXPECTED:
        return f"{dotted or 'config'}: expected {_EXPECTED[kind]}, got {value!r}"
    return f"{dotted or 'config'}: {err['msg']}, got {value!r}"  # a check without wording here


def load(model: type[BaseModel], data: Any, where: str = "", *, moved: Moved = None,
         unknown: str = UNKNOWN) -> Any:
    """`model` built from `data`; its first error a one-line `ConfigError` naming the
    dotted key (`where` + its path). `unknown`: the wording for unknown keys (fields
    `keys`, dotted; `names`, bare; `known`; `where`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message = _message(exc.errors(include_url=False)[0], model, where, moved, unknown)
        raise ConfigError(message) from None


# ------------------------------------------------------------------ YAML


class StrictLoader(yaml.SafeLoader):
    """YAML 1.2's floats (PyYAML's 1.1 reads `1e-3` as a string); a key given twice refused."""


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)
               |[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
               |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose own keys are distinct. Merge keys (`<<: *defaults`) are skipped:
    `construct_mapping` flattens them, the mapping's own keys overriding merged ones."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
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


def _merge(node: dict[str, Any], key: str, value: Any) -> None:
    """Set `key`; a mapping merges into an existing mapping (`--set 'train={epochs: 1}'`
    changes epochs and keeps the file's other train keys)."""
    old = node.get(key)
    if isinstance(value, dict) and isinstance(old, dict):
        for k, v in value.items():
            _merge(old, str(k), v)
    else:
        node[key] = value


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` (value parsed as YAML) to a raw mapping."""
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
