"""A stack's training state between epochs, so an interrupted `--sweep` stack resumes.

Members of a stack get their own `checkpoint.pt` only when the stack ends
(`stacked._finish_member`). Until then the state lives in one file beside the
members, `<sweep out>/stack-<method>-<key>.pt`: the flat (M, P) weights, both
stacked Adam states, the discriminator weights w and alignment sums, every
member's batch-order and dropout generators, and the histories and errors so
far. Reloading it and carrying on gives the same numbers as a stack that was
never stopped (tested on the CPU).

Written at most every `INTERVAL_S` seconds of wall time, not every epoch: a
stack holds M runs' weights and moments (16 AMID-sized members are about
100 MB), and on a GPU an epoch takes a fraction of a second, so an
every-epoch write would cost more than the training. A kill loses at most
that much work. The file is removed when every member has its own folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from amid.distill.checkpoint import config_changes, read_torch_file, save_checkpoint
from amid.errors import CheckpointError

INTERVAL_S = 30.0


def state_path(folder: Path, method: str, runs: list[Path]) -> Path:
    """The state file of the stack of `runs`; another set of members gets another file."""
    key = hashlib.sha1(json.dumps([method, sorted(str(r) for r in runs)]).encode()).hexdigest()
    return folder / f"stack-{method}-{key[:12]}.pt"


def save_state(path: Path, *, method: str, configs: list[dict[str, Any]], runs: list[Path],
               epoch: int, tensors: dict[str, torch.Tensor], step_counts: dict[str, int],
               generators: list[torch.Generator], histories: list[list[dict[str, float]]],
               errors: list[str | None]) -> None:
    """Atomically write the state after `epoch` epochs; the previous file stays on failure."""
    save_checkpoint(path, {
        "kind": "amid-stack",
        "method": method,
        "epoch": epoch,
        "runs": [str(r) for r in runs],
        "configs": configs,
        "tensors": {k: v.detach().cpu() for k, v in tensors.items()},
        "step_counts": step_counts,
        "generators": [g.get_state() for g in generators],
        "histories": histories,
        "errors": errors,
    })


def load_state(path: Path, method: str, configs: list[dict[str, Any]],
               runs: list[Path]) -> dict[str, Any]:
    """Read a state file and check it is this stack: same method, members and configurations."""
    state = read_torch_file(path)
    if not isinstance(state, dict) or state.get("kind") != "amid-stack":
        raise CheckpointError(f"{path}: not a stack state written by amid-train --sweep; "
                              "delete it to restart the stack from scratch")
    if state["method"] != method or state["runs"] != [str(r) for r in runs]:
        raise CheckpointError(f"{path} belongs to another stack ({state['method']}: "
                              f"{', '.join(state['runs'])}); delete it to restart")
    for run, old, new in zip(runs, state["configs"], configs, strict=True):
        changed = config_changes(old, new)
        if changed:
            raise CheckpointError(
                f"{path}: member {run} was stacked with a different configuration "
                f"({', '.join(changed[:8])}); resuming would mix two experiments: use another "
                "--out folder or delete the file")
    return state


def restore(state: dict[str, Any], tensors: dict[str, torch.Tensor],
            generators: list[torch.Generator]) -> None:
    """Copy the saved tensors and generator states into the live ones, in place."""
    with torch.no_grad():
        for name, live in tensors.items():
            live.copy_(state["tensors"][name].to(live.device))
    for gen, saved in zip(generators, state["generators"], strict=True):
        gen.set_state(saved)
