"""What stage three reads from a run folder besides `outputs.h5` (docs/outputs.md).

`config.json` (the resolved configuration the run was trained with) and the
`inputs` record of `student.json` (which caches, made how, the student was
trained on). Both are JSON a user can edit or damage, so every piece is
checked before use and a bad one is a `CheckpointError` naming the file and
the key, never an AttributeError from deep inside.

Only the keys stage three needs are read (dataset name / cache folder, each
modality's extractor name and parameters), so a reshaped training
configuration elsewhere does not break prediction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amid.errors import CacheError, CheckpointError
from amid.identity import identity_differences, identity_of

# A cache's precision follows the machine it was extracted on (bf16 autocast on a
# GPU); the features differ at rounding level only, so it is not a reason to refuse.
IGNORED_IDENTITY_PARAMS = ("precision",)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "null",
            bool: "a boolean", int: "a number", float: "a number"}.get(type(value), "a value")


def read_json(path: Path) -> Any:
    """A JSON file of the run folder; missing or unparsable is a CheckpointError naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (is {path.parent} an amid-train run "
                              "folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc.strerror}") from None


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: `{key}` must be a mapping, found {_kind(value)}")
    return value


class RunConfig:
    """The parts of `config.json` that prediction uses, checked on access."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "config.json"
        data = read_json(self.path)
        if not isinstance(data, dict):
            raise CheckpointError(f"{self.path}: expected a JSON object with a `config` "
                                  f"mapping, found {_kind(data)}")
        self.data = data
        self.config = _mapping(data.get("config"), self.path, "config")
        for name in ("dataset", "extract"):  # a damaged section fails here, whoever reads it
            self.section(name)

    def section(self, name: str) -> dict[str, Any]:
        """A top-level section of the configuration (empty when absent)."""
        value = self.config.get(name, {})
        return _mapping(value, self.path, f"config.{name}")

    def dataset_value(self, key: str, default: str) -> str:
        value = self.section("dataset").get(key, default)
        if not isinstance(value, str):
            raise CheckpointError(f"{self.path}: `config.dataset.{key}` must be a string, "
                                  f"found {_kind(value)}")
        return value

    def extract(self, modality: str) -> dict[str, Any] | None:
        """`extract.<modality>` ({extractor, params, ...}); None when the run has none."""
        sections = self.section("extract")
        if modality not in sections:
            return None
        where = f"config.extract.{modality}"
        spec = _mapping(sections[modality], self.path, where)
        name = spec.get("extractor")
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{self.path}: `{where}.extractor` must name an extractor, "
                                  f"found {_kind(name) if name != '' else 'an empty string'}")
        _mapping(spec.get("params", {}), self.path, f"{where}.params")
        return spec


def recorded_inputs(run_dir: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], Path] | None:
    """The `inputs` record ({modality: {cache, identity, fingerprint}}) and the file holding it.

    `student.json` records its target modalities; `config.json` all of them.
    None for runs trained before the record existed.
    """
    sources: list[tuple[Any, Path]] = [(meta.get("inputs"), Path(run_dir) / "student.json")]
    config = Path(run_dir) / "config.json"
    if config.is_file():
        data = read_json(config)
        if isinstance(data, dict):
            sources.append((data.get("inputs"), config))
    for inputs, path in sources:
        if inputs is not None:
            return _mapping(inputs, path, "inputs"), path
    return None


def expected_identity(inputs: dict[str, Any], source: Path, modality: str
                      ) -> dict[str, Any] | None:
    """The identity of the cache `modality` was trained on, checked for shape."""
    if modality not in inputs:
        return None
    entry = _mapping(inputs[modality], source, f"inputs.{modality}")
    identity = _mapping(entry.get("identity"), source, f"inputs.{modality}.identity")
    _mapping(identity.get("params", {}), source, f"inputs.{modality}.identity.params")
    return identity


def check_cache(path: Path, attrs: dict[str, Any], modality: str,
                expected: dict[str, Any] | None, extractor: str | None) -> str | None:
    """Refuse a cache not made like the student's training cache of `modality`.

    With the training identity known (`expected`), every identity key is
    compared (modality, extractor, model, each parameter but precision) and
    all differences are named. Without it (a run older than the `inputs`
    record), only the modality and the extractor name the run's config.json
    gives can be compared: the returned warning says so. None when all is known
    and equal.
    """
    found = identity_of(attrs)
    if expected is not None:
        diffs = identity_differences(expected, found, ignore=IGNORED_IDENTITY_PARAMS)
        if diffs:
            raise CacheError(
                f"{path}: not made like the {modality} features the student was trained on "
                f"({'; '.join(diffs)}); extract the new data with the run's settings "
                "(amid-predict RUN --media DIR_OR_CSV does)"
            )
        return None
    partial = {"modality": modality, "extractor": extractor or found.get("extractor"),
               "model": found.get("model"), "params": found.get("params")}
    diffs = identity_differences(partial, found)
    if diffs:
        raise CacheError(f"{path}: not a cache of the student's {modality} features "
                         f"({'; '.join(diffs)})")
    return (f"{path}: cannot check the extractor parameters of this cache: the run records "
            "no training-cache identity (`inputs`, written by newer amid-train), so only its "
            "modality and extractor name were compared")
