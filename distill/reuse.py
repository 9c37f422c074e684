"""A sweep's grid point taken from a finished run instead of being trained again.

`amid-train --grid NAME --reuse runs/amid` (dvc.yaml's `sweep@NAME`): a grid
point whose run configuration is exactly that of a finished run under a reuse
folder gets a copy of that run's folder. Without it the alpha grid trained its
alpha=4 row a second time and got other numbers than the method's own run of
the same configuration (dropout under vmap depends on the stack's width).

Taken only when everything that decides the result is the same: the method,
every key of the recorded configuration (those a resume may change included),
the caches' fingerprints, and a finished run (all `train.epochs`, `outputs.h5`
written); checked on the source and again on the copy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from amid.distill.checkpoint import config_changes, input_changes, read_torch_file
from amid.errors import AmidError, CheckpointError, ConfigError, OutputError
from amid.locking import ExclusiveLock
from amid.storage import remove_stale_temporaries, temporary_name, write_failure

log = logging.getLogger("amid.distill")


def reuse_folders(folders: list[Path] | tuple[Path, ...]) -> list[Path]:
    """The folders as given; one that does not exist is a ConfigError naming it (a
    misspelt path would otherwise retrain everything in silence)."""
    for folder in folders:
        if not Path(folder).is_dir():
            what = "is not a folder" if Path(folder).exists() else "does not exist"
            raise ConfigError(f"--reuse {folder}: {what} (a folder of finished runs, "
                              "e.g. runs/<method>)")
    return [Path(f) for f in folders]


def candidates(folders: list[Path]) -> list[Path]:
    """Run folders under each reuse folder (the folder itself, then its subfolders, by
    name): those holding checkpoint.pt and config.json. Hidden names (temporaries) skipped."""
    found: list[Path] = []
    for folder in folders:
        for run in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
            if run.name.startswith(".") and run != folder:
                continue
            if (run / "checkpoint.pt").is_file() and (run / "config.json").is_file():
                found.append(run)
    return found


def finished_as(run: Path, method: str, config: dict[str, Any], inputs: dict[str, Any],
                epochs: int) -> list[dict[str, float]] | None:
    """The history of `run` if it is a finished run of `method` made from exactly
    `config` (`runstate.run_config`) on caches `inputs` (`TrainData.inputs`); else None."""
    try:
        recorded = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _same(recorded, method, config, inputs) or not (run / "outputs.h5").is_file():
        return None
    try:
        ckpt = read_torch_file(run / "checkpoint.pt")
    except CheckpointError:
        return None
    if not _same(ckpt, method, config, inputs) or ckpt.get("epoch") != epochs:
        return None  # unfinished (or stopped by a NaN): it is no run of `epochs` epochs
    return list(ckpt.get("history") or [])


def _same(record: Any, method: str, config: dict[str, Any], inputs: dict[str, Any]) -> bool:
    """A config.json or checkpoint of `method`, every key of `config`, the same caches."""
    if not (isinstance(record, dict) and record.get("method") == method
            and isinstance(record.get("config"), dict) and isinstance(record.get("inputs"), dict)):
        return False
    return not config_changes(record["config"], config, ignore=()) and \
        not input_changes(record["inputs"], inputs)


def take_over(source: Path, dest: Path, method: str, config: dict[str, Any],
              inputs: dict[str, Any], epochs: int) -> list[dict[str, float]] | None:
    """Copy the finished run `source` to `dest` (which holds no checkpoint); its history.

    The copy is checked in a temporary folder beside `dest`, then, under `dest`'s
    lock, renamed into place (what `dest` held moved aside). None, and nothing
    changed, when the copy does not check out or `dest` is locked or has got a
    checkpoint meanwhile. A failed copy (full disk) is an OutputError naming `dest`.
    """
    tmp, old = temporary_name(dest), temporary_name(dest.with_name(dest.name + ".old"))
    for stale in (dest, dest.with_name(dest.name + ".old")):  # killed take_overs' copies
        remove_stale_temporaries(stale)
    try:
        # .lock: the source's trainer's; .*.tmp: a killed writer's temporaries
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".lock", ".*.tmp"))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(write_failure(dest, exc)) from None
    try:
        history = finished_as(tmp, method, config, inputs, epochs)
        if history is None:
            log.warning("%s changed while it was copied; %s is trained instead", source, dest)
            return None
        try:
            dest.mkdir(parents=True, exist_ok=True)
            with ExclusiveLock(dest / ".lock", AmidError(f"{dest} is locked")):
                if (dest / "checkpoint.pt").exists():
                    return None
                os.replace(dest, old)
                os.replace(tmp, dest)
        except AmidError:  # another amid-train holds it: training reports that as usual
            return None
        except OSError as exc:
            if old.exists() and not dest.exists():
                os.replace(old, dest)  # put back what was there
            raise OutputError(write_failure(dest, exc)) from None
        return history
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
