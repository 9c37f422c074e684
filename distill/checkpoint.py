"""Per-epoch checkpoints: everything a resumed run needs to continue bit for bit.

`checkpoint.pt` holds the method's state (networks, discriminators, dynamic
weights), both optimisers, the completed epoch count, every RNG state, the
metric history, the resolved configuration and the caches trained on (path,
identity, SHA-256); it is read with `weights_only=True`. A resume with another
configuration, or on caches whose bytes changed, is refused naming what differs:
it would mix two experiments in one run.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amid.errors import CheckpointError
from amid.faults import fault_point
from amid.storage import replace_atomically

# Keys that may change between a run and its resumption without changing the result.
RESUMABLE_CHANGES = ("train.epochs", "train.device", "train.eval_batch_size")


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": _to_lists(random.getstate()), "generator": generator.get_state()}


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_to_tuples(state["python"]))
    generator.set_state(state["generator"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def flatten_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a configuration dict; each `extract.<m>` stays one value."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not (prefix == "" and k == "extract"):
            flat.update(flatten_config(v, key + "."))
        else:
            flat[key] = v
    return flat


def config_changes(old: dict[str, Any], new: dict[str, Any],
                   ignore: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """Dotted keys whose value differs, ignoring those a resume may change (`ignore=()`:
    every key, as a sweep asks of a finished run it would take instead of training)."""
    a, b = flatten_config(old), flatten_config(new)
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in ignore]


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the caches a checkpoint trained on and the current ones."""
    out = []
    for m in sorted(set(old) | set(new)):
        a, b = old.get(m), new.get(m)
        if a is None or b is None:
            out.append(f"modality {m} {'added' if a is None else 'removed'}")
        elif a.get("fingerprint") != b.get("fingerprint"):
            out.append(f"{m} cache {b.get('cache')} changed since the checkpoint "
                       f"(sha256 {str(a.get('fingerprint'))[:12]}... -> "
                       f"{str(b.get('fingerprint'))[:12]}...)")
    return out


def _tensor_bytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, dict):
        return sum(_tensor_bytes(v) for v in x.values())
    if isinstance(x, list | tuple):
        return sum(_tensor_bytes(v) for v in x)
    return 0


def own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A stacked member's parameters are rows of the stack's tensors: each copied out
    (torch.save would write the whole stacked storage), once (a module shared by two
    names, the teacher holding the student's encoder, stays one tensor in the file)."""
    copies: dict[tuple, torch.Tensor] = {}
    for k, v in state.items():  # in place: the state_dict's own type and metadata stay
        if v.untyped_storage().nbytes() > v.nbytes:
            key = (v.data_ptr(), tuple(v.shape), v.stride())
            if key not in copies:
                copies[key] = v.clone()
            state[k] = copies[key].detach()  # a tensor per name, as state_dict gives
    return state


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically; a full disk is a CheckpointError and the previous file stays."""
    kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint written"
    # torch's zip writer reports a full disk as "unexpected pos 640 vs 534":
    # claiming the space first gives the user the real reason.
    # Through a file object: given a path, torch names the archive's root folder
    # after the (temporary, per-process) file, and identical states would differ.
    with (replace_atomically(path, lambda why: CheckpointError(f"{why}; {kept}"),
                             reserve=int(_tensor_bytes(payload) * 1.1) + (1 << 20),
                             errors=(OSError, RuntimeError)) as tmp,
          open(tmp, "wb") as fh):
        torch.save(interned(payload), fh)
        fault_point("checkpoint-written")  # crash tests: the bytes written, not yet renamed


def interned(x: Any) -> Any:
    """`x` with every string interned (containers rebuilt, tensors as they are): pickle
    shares a string by identity, so a resumed run's equal state (its strings loaded from
    the checkpoint) gave other bytes (docs/reproducibility.md)."""
    if isinstance(x, str):
        return sys.intern(x)
    if isinstance(x, dict):  # a state_dict stays an OrderedDict with its `_metadata`
        out = type(x)((interned(k), interned(v)) for k, v in x.items())
        if hasattr(x, "_metadata"):
            out._metadata = interned(x._metadata)
        return out
    if type(x) in (list, tuple):
        return type(x)(interned(v) for v in x)
    return x


def remove_strays(run: Path) -> None:
    """Delete temporaries a killed run left in its folder (checkpoint, weights, outputs)."""
    for stray in Path(run).glob(".*.tmp"):
        stray.unlink(missing_ok=True)


def read_torch_file(path: Path) -> Any:
    """`torch.load` with weights only; a damaged file is a CheckpointError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged zip/pickle
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {first}); "
                              "delete it to start over") from None


def load_checkpoint(path: Path, method: str, config: dict[str, Any],
                    inputs: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint; check it belongs to this method, configuration and caches."""
    ckpt = read_torch_file(path)
    if not isinstance(ckpt, dict) or not {"method", "config", "epoch"} <= set(ckpt):
        raise CheckpointError(f"{path}: not an amid-train checkpoint; delete it to start over")
    if ckpt.get("method") != method:
        raise CheckpointError(f"{path} is a checkpoint of method {ckpt.get('method')!r}, "
                              f"not {method!r}; use another --out folder")
    changed = config_changes(ckpt["config"], config)
    if changed:
        raise CheckpointError(
            f"{path} was trained with a different configuration ({', '.join(changed[:8])}); "
            "resuming would mix two experiments: use another --out folder or delete the checkpoint")
    if "inputs" not in ckpt:
        raise CheckpointError(f"{path} records no cache fingerprints (an older amid-train), "
                              "so a resume cannot tell whether the features changed; delete "
                              "it to start over")
    moved = input_changes(ckpt["inputs"], inputs)
    if moved:
        raise CheckpointError(
            f"{path} was trained on other features ({'; '.join(moved)}); resuming would "
            "mix two feature sets: use another --out folder or delete the checkpoint")
    return ckpt
