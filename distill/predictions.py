"""Predictions over whole splits, the per-epoch metrics, and what a finished run leaves
(`finish_run`: the modules as safetensors + JSON, `outputs.h5`; contracts).

Everything here runs between epochs (eval mode, no gradients), so the host
syncs it needs never land inside a training epoch. `outputs.h5` holds no
timestamps: identical training gives a byte-identical file (DVC then skips
what depends on it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from amid.config import Config
from amid.distill.data import TrainData
from amid.distill.inference import save_module
from amid.distill.methods.base import Method, Prediction
from amid.errors import CacheError
from amid.storage import hdf5_estimate, replace_atomically

Split = dict[str, torch.Tensor]  # labels, present, student_emb/logits, teacher_emb/logits


def predict_split(method: Method, data: TrainData, rows: torch.Tensor, batch_size: int,
                  autocast: AbstractContextManager | None = None) -> Split:
    """Run `method.predict` over `rows` in eval mode; float32 results on the device."""
    chunks = predict_chunks(method, method.predict, data.batch, rows, batch_size, autocast)
    return as_split(chunks, data.labels[rows], data.aux_present[rows])


@torch.no_grad()
def predict_chunks(module: torch.nn.Module, predict: Callable[[Any], Any],
                   batch_of: Callable[[torch.Tensor], Any], rows: torch.Tensor, chunk: int,
                   autocast: AbstractContextManager | None = None,
                   weights: Iterable[torch.Tensor] = ()) -> list[Any]:
    """`predict(batch_of(idx))` for consecutive chunks `idx` of `rows`, with `module` (whose
    modes the calls read) in eval mode meanwhile and its mode given back after.

    Its parameters (and `weights`, tensors the calls read instead: a stack's) do not
    require grad meanwhile either: PyTorch picks some CPU kernels by `requires_grad` even
    under no_grad, and a resumed run's outputs.h5 differed from an uninterrupted one's
    by 1e-8 (docs/reproducibility.md).
    """
    was_training = module.training
    module.eval()
    try:
        chunks = []
        with weights_only([*module.parameters(), *weights]):
            for start in range(0, int(rows.shape[0]), chunk):
                batch = batch_of(rows[start:start + chunk])
                with autocast if autocast is not None else contextlib.nullcontext():
                    chunks.append(predict(batch))
        return chunks
    finally:
        module.train(was_training)


@contextlib.contextmanager
def weights_only(tensors: list[torch.Tensor]) -> Iterator[None]:
    """`requires_grad` off on `tensors` (leaves) meanwhile, each flag given back after."""
    flags = {id(t): (t, t.requires_grad) for t in tensors}  # a tied tensor once
    for t, _ in flags.values():
        t.requires_grad_(False)
    try:
        yield
    finally:
        for t, flag in flags.values():
            t.requires_grad_(flag)


def as_split(chunks: list[Prediction], labels: torch.Tensor, present: torch.Tensor) -> Split:
    """Consecutive chunks of `Method.predict` (role -> (emb (b, d), logits (b, C))) as one
    split: `<role>_emb`, `<role>_logits` in float32, with the rows' labels and presence."""
    parts: dict[str, list[torch.Tensor]] = {}
    for pred in chunks:
        for role, (emb, logits) in pred.items():
            parts.setdefault(f"{role}_emb", []).append(emb.float())  # (b, d)
            parts.setdefault(f"{role}_logits", []).append(logits.float())  # (b, C)
    return {**{k: torch.cat(v) for k, v in parts.items()}, "labels": labels, "present": present}


def accuracy(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None = None
             ) -> torch.Tensor:
    hit = (logits.argmax(dim=1) == labels).float()  # (n,)
    if keep is None:
        return hit.mean()
    return (hit * keep).sum() / keep.sum().clamp(min=1)


def same_class_cosine(t: torch.Tensor, s: torch.Tensor, labels: torch.Tensor,
                      keep: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Mean cos(t_i, s_j) over pairs of the same class, i == j included (paper Fig. 5)."""
    t = F.normalize(t, dim=1) * keep[:, None]
    s = F.normalize(s, dim=1) * keep[:, None]
    total = count = t.new_zeros(())  # rebound below, never added to in place
    for start in range(0, t.shape[0], chunk):
        cos = t[start:start + chunk] @ s.T  # (c, n)
        same = (labels[start:start + chunk, None] == labels[None, :]).float()
        same = same * keep[start:start + chunk, None] * keep[None, :]
        total = total + (cos * same).sum()
        count = count + same.sum()
    return total / count.clamp(min=1)


def split_metrics(preds: dict[str, Split]) -> dict[str, torch.Tensor]:
    """Accuracies per split and role, the teacher-student gap and same-class cosine (on the
    validation split when there is one, else the training split: never on test data)."""
    out: dict[str, torch.Tensor] = {}
    for split, p in preds.items():
        out[f"{split}_acc_student"] = accuracy(p["student_logits"], p["labels"])
        if "teacher_logits" in p:
            keep = p["present"].float()
            out[f"{split}_acc_teacher"] = accuracy(p["teacher_logits"], p["labels"], keep)
    ref = "val" if "val" in preds else "train"
    p = preds[ref]
    if "teacher_logits" in p:
        out["acc_gap"] = out[f"{ref}_acc_teacher"] - out[f"{ref}_acc_student"]
        out["cos_same_class"] = same_class_cosine(
            p["teacher_emb"], p["student_emb"], p["labels"], p["present"].float())
    return out


def write_outputs(path: Path, data: TrainData, preds: dict[str, Split], *, method: str,
                  seed: int, extra: dict[str, Any]) -> None:
    """`outputs.h5` per the contract, written to a temporary name and renamed; `extra`:
    more root attributes (what the run trained on), JSON-encoded."""
    string = h5py.string_dtype("utf-8")
    # HDF5 segfaults on a full disk; reserve first (see amid.storage)
    size = sum(v.numel() * v.element_size() for p in preds.values() for v in p.values())
    reserve = hdf5_estimate(2 * size, len(data.ids), sum(map(len, data.ids)))
    with replace_atomically(path, CacheError, reserve=reserve) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["classes"] = json.dumps(data.classes)
        f.attrs["method"] = method
        f.attrs["dataset"] = data.dataset
        f.attrs["fold"] = json.dumps(data.fold)
        f.attrs["seed"] = seed
        for key, value in extra.items():
            f.attrs[key] = json.dumps(value)
        for split, p in preds.items():
            rows = data.splits[split].cpu().numpy()
            g = untimed_group(f, split)
            ids = [data.ids[r] for r in rows]
            g.create_dataset("ids", data=ids, dtype=string, track_times=False)
            g.create_dataset("labels", data=p["labels"].cpu().numpy().astype(np.int64),
                             track_times=False)
            _role(g, "student", p, None)
            if "teacher_emb" in p:
                present = p["present"].cpu().numpy()
                t = _role(g, "teacher", p, None if present.all() else present)
                if not present.all():
                    t.create_dataset("ids", data=[i for i, k in zip(ids, present, strict=True)
                                                  if k], dtype=string, track_times=False)


def _role(group: h5py.Group, role: str, p: Split, keep: np.ndarray | None) -> h5py.Group:
    sub = untimed_group(group, role)
    for name, key in (("embeddings", "emb"), ("logits", "logits")):
        x = p[f"{role}_{key}"].cpu().numpy().astype(np.float32)
        sub.create_dataset(name, data=x if keep is None else x[keep], track_times=False)
    return sub


def untimed_group(parent: h5py.Group, name: str) -> h5py.Group:
    """A group without creation/modification times in its header (h5py's create_group
    always records them, which would make identical outputs differ byte for byte)."""
    plist = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    plist.set_obj_track_times(False)
    gid = h5py.h5g.create(parent.id, name.encode(), gcpl=plist)
    return h5py.Group(gid)


def finish_run(method: Method, name: str, data: TrainData, cfg: Config, run: Path) -> None:
    """Safetensors + JSON per module, and the last epoch's predictions as outputs.h5."""
    tc = cfg.train
    common = {"method": name, "classes": data.classes, "target": list(data.target),
              "auxiliary": list(data.auxiliary),
              "feature_dims": {m: d.dim for m, d in {**data.target, **data.auxiliary}.items()},
              "max_steps": tc.max_steps, "dataset": data.dataset, "fold": data.fold,
              "seed": tc.seed, "train_samples": int(data.splits["train"].shape[0]),
              "train_per_class": cfg.dataset.train_per_class,
              "train_fraction": cfg.dataset.train_fraction}
    for role, (module, arch) in method.exports().items():
        extra = {"trained": getattr(method, "student_trained", True)} if role == "student" else {}
        mods = data.target if role == "student" else {**data.target, **data.auxiliary}
        inputs = {m: d.record() for m, d in mods.items()}
        save_module(module, {**common, "module": role, "arch": arch, "inputs": inputs, **extra},
                    run, role)
    preds = {s: predict_split(method, data, rows, tc.eval_batch_size)
             for s, rows in data.splits.items()}
    write_outputs(run / "outputs.h5", data, preds, method=name, seed=tc.seed,
                  extra={k: common[k] for k in ("train_samples", "train_per_class",
                                                "train_fraction")})
