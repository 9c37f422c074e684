"""Which run a metrics file or run folder is, and the label tables and figures give it.

A run's name is its key under `methods` in the configuration it was trained
with (`amid`, `amid_ccl`, `amid_fixed_teacher`); the registered method it
trains is that entry's `method` (the run name itself when absent); `ts`,
`ts_ta` and `amid` also record a `preset` (`paper`, the default, or
`recommended`). A run at any preset but the paper's is labelled with it,
`amid (recommended)`, so no table, figure or metrics file shows the
recommended variant under the paper method's bare name (a run named for its
preset, `amid_recommended`, is labelled the same way).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amid.errors import AmidError

PAPER_PRESET = "paper"


def display_label(run: str, preset: str | None) -> str:
    """`amid` at the paper's preset (or none); `amid (recommended)` at another, whether
    the run is `methods.amid` at that preset or a run named for it (`amid_recommended`)."""
    if preset in (None, PAPER_PRESET):
        return run
    return f"{run.removesuffix(f'_{preset}') or run} ({preset})"


def file_stem(label: str) -> str:
    """A label as part of a file name: `amid (recommended)` -> `amid_recommended`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


@dataclass(frozen=True)
class RunIdentity:
    """What a run folder's config.json says the run is."""

    run: str  # its name under `methods`
    method: str  # the registered method
    preset: str | None  # ts / ts_ta / amid: paper or recommended
    auxiliary: list[str] | None  # dataset.auxiliary: which modalities the teacher adds

    @property
    def label(self) -> str:
        return display_label(self.run, self.preset)


def _string(value: Any, path: Path, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise AmidError(f"{path}: `{key}` must be a string, found {json.dumps(value)[:40]}")
    return value


def _mapping(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AmidError(f"{path}: `{key}` must be a mapping, found {json.dumps(value)[:40]}")
    return value


def read_identity(run_dir: str | Path, fallback: str) -> RunIdentity | None:
    """The run's identity from `run_dir/config.json`; None when there is no such file.

    `fallback` (the method `outputs.h5` names, or the folder's name) stands in
    for what the file does not record. A config.json that is not JSON, or whose
    entries have the wrong type, is an AmidError naming the file and the key.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmidError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise AmidError(f"{path} cannot be read: {exc.strerror}") from None
    data = _mapping(data, path, "the file")
    top = _string(data.get("method"), path, "method")
    config = _mapping(data.get("config", {}), path, "config")
    methods = _mapping(config.get("methods", {}), path, "config.methods")
    # amid-train records the run's own entry only; a file holding several names the
    # run at the top (`method`), else it is the folder's run
    if len(methods) == 1:
        run = next(iter(methods))
    else:
        run = next((n for n in (top, fallback) if n in methods), top or fallback)
    entry = _mapping(methods.get(run, {}), path, f"config.methods.{run}")
    method = _string(entry.get("method"), path, f"config.methods.{run}.method")
    preset = _string(entry.get("preset"), path, f"config.methods.{run}.preset")
    dataset = _mapping(config.get("dataset", {}), path, "config.dataset")
    auxiliary = dataset.get("auxiliary")
    if auxiliary is not None and (not isinstance(auxiliary, list)
                                  or not all(isinstance(m, str) for m in auxiliary)):
        raise AmidError(f"{path}: `config.dataset.auxiliary` must be a list of modality "
                        f"names, found {json.dumps(auxiliary)[:40]}")
    # without a `method` key the run name is the registered method (`methods.amid`);
    # a file with no `methods` at all keeps what amid-train wrote at the top
    registered = method or (run if run in methods else top or fallback)
    return RunIdentity(run, registered, preset, auxiliary)
