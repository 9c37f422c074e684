"""Saving and loading trained modules; the student's inference API (contracts).

Weights travel as safetensors only (no pickle: a run folder from someone else
cannot execute code on load) next to a JSON file holding the architecture
kwargs, classes and modality names needed to rebuild the module.

    model, meta = load_student("runs/amid")
    out = predict_student(model, meta, {"visual": read_cache(path)})
    out["labels"], out["embeddings"]            # class names, (n, d)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from amid.cache import FeatureCache
from amid.distill.features import pad_sequences
from amid.distill.models import MultiModalEncoder, Student
from amid.errors import CacheError, CheckpointError
from amid.storage import replace_atomically


def _atomic(path: Path, write: Any) -> None:
    # a full disk: say so, not a library error
    with replace_atomically(path, CheckpointError, errors=(OSError, SafetensorError)) as tmp:
        write(tmp)


def save_module(module: nn.Module, meta: dict[str, Any], run_dir: Path, name: str) -> None:
    """Write `<name>.safetensors` and `<name>.json` (meta) in `run_dir`, each atomically."""
    run_dir = Path(run_dir)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    _atomic(run_dir / f"{name}.safetensors",
            lambda tmp: save_file(tensors, str(tmp), metadata={"module": name}))
    # Key order is meaningful: a multi-modal encoder fuses its modalities in the
    # order of its config's mapping, so it must survive the round trip.
    text = json.dumps(meta, indent=2)
    _atomic(run_dir / f"{name}.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors file into `module`; any mismatch is a CheckpointError naming the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"weight file {path} does not exist")
    try:
        state = load_file(str(path))  # on the CPU
    except (SafetensorError, OSError) as exc:
        msg = f"{path}: not a readable safetensors file (truncated?): {exc}"
        raise CheckpointError(msg) from None
    own = module.state_dict()
    wrong = {"missing": sorted(set(own) - set(state)),
             "unexpected": sorted(set(state) - set(own)),
             "shape differs": [k for k in own if k in state and own[k].shape != state[k].shape]}
    if any(wrong.values()):
        detail = "; ".join(f"{what}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                           for what, keys in wrong.items() if keys)
        raise CheckpointError(f"{path}: weights are for another architecture ({detail})")
    _check_values(path, own, state)
    module.load_state_dict(state)


def _check_values(path: Path, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
                  ) -> None:
    """Refuse tensors whose dtype differs from the module's (`load_state_dict` would cast
    a header edited from F32 to I32 without a word: one class for every sample), or that
    hold NaN / inf (NaN logits: class 0 for every sample)."""
    for key, tensor in state.items():
        want = own[key].dtype
        if tensor.dtype != want:
            raise CheckpointError(
                f"{path}: tensor {key!r} is stored as {_dtype_name(tensor.dtype)}, the "
                f"module's is {_dtype_name(want)} (a damaged or edited file)")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {key!r} holds NaN or infinite values (a "
                                  "diverged or damaged run); retrain or restore the file")


def _dtype_name(dtype: torch.dtype) -> str:
    # safetensors' own names (F32, I32, ...), as a header shows them
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.float64: "F64", torch.int32: "I32", torch.int64: "I64", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
    return names.get(dtype, str(dtype).removeprefix("torch."))


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.exists() and (path.parent / "sweep.json").is_file():
        # dvc.yaml's runs/<m> holds the method's seeds (--repeat-seeds), each a run of its own
        runs = sorted(str(p.parent) for p in path.parent.glob(f"*/{path.name}"))
        raise CheckpointError(f"{path.parent} holds the runs of a sweep or of --repeat-seeds "
                              f"(sweep.json), not one run: give one of them "
                              f"({', '.join(runs[:3]) or 'none has finished'}"
                              f"{', ...' if len(runs) > 3 else ''})")
    if not path.exists():
        raise CheckpointError(f"{path} does not exist (is {path.parent} an amid-train run folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def load_student(run_dir: str | Path, device: str = "cpu") -> tuple[Student, dict[str, Any]]:
    """The trained student of a run, in eval mode on `device`, and its `student.json` meta."""
    run_dir = Path(run_dir)
    meta = _read_meta(run_dir / "student.json")
    # `trained` false (older runs: method `teacher`): E_S + g trained only inside the
    # teacher, never on the target alone; its predictions would look like a student's
    if meta.get("trained") is False or ("trained" not in meta and meta.get("method") == "teacher"):
        raise CheckpointError(f"{run_dir} is a run of the `teacher` method, whose student was "
                              "never trained on the target alone: predict or export the run of "
                              "a student method (baseline, amid, ...)")
    try:
        arch = meta["arch"]
        encoder = MultiModalEncoder(**arch["encoder"])
        model = Student(encoder, nn.Linear(arch["encoder"]["dim"], arch["num_classes"]))
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{run_dir / 'student.json'}: bad architecture entry ({exc})"
        raise CheckpointError(msg) from None
    load_weights(model, run_dir / "student.safetensors")
    return model.to(device).eval(), meta


@torch.no_grad()
def predict_student(model: Student, meta: dict[str, Any], caches: dict[str, FeatureCache],
                    batch_size: int = 256) -> dict[str, Any]:
    """Embeddings, logits, probabilities and predicted class names for every sample
    present in all of the student's target-modality caches (in the first cache's order)."""
    target = meta["target"]
    absent = [m for m in target if m not in caches]
    if absent:
        raise CacheError(f"the student needs features of {absent}; got {sorted(caches)}")
    for m in target:
        want = meta["feature_dims"][m]
        if caches[m].feature_dim != want:
            raise CacheError(
                f"{caches[m].path}: features have dim {caches[m].feature_dim}, the student was "
                f"trained on {m} features of dim {want} (another extractor?)")
    # one id -> row map per modality, built once: rebuilding it per id made
    # prediction quadratic in the number of samples (300k ids took hours)
    index = {m: caches[m].index() for m in target}
    first = caches[target[0]].ids
    ids = [sid for sid in first if all(sid in index[m] for m in target[1:])]
    rows = {m: np.fromiter((index[m][s] for s in ids), dtype=np.int64, count=len(ids))
            for m in target}
    device = next(model.parameters()).device
    embs, logits = [], []
    for start in range(0, len(ids), batch_size):
        inputs = {}
        for m in target:
            x, lengths = pad_sequences(caches[m], rows[m][start:start + batch_size],
                                       meta.get("max_steps"))
            inputs[m] = (torch.from_numpy(x).to(device), torch.from_numpy(lengths).to(device))
        e, lg = model(inputs)  # (b, d), (b, C)
        embs.append(e.float().cpu())
        logits.append(lg.float().cpu())
    emb = torch.cat(embs).numpy() if embs else np.zeros((0, model.encoder.dim), np.float32)
    lg = torch.cat(logits) if logits else torch.zeros((0, len(meta["classes"])))
    probs = lg.softmax(dim=1).numpy()
    predicted = [meta["classes"][k] for k in probs.argmax(axis=1)]
    return {"ids": ids, "embeddings": emb, "logits": lg.numpy(), "probabilities": probs,
            "predicted": predicted,
            "labels": predicted}  # the older name of `predicted` (predicted class names)
