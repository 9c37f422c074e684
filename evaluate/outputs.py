"""Reading a run's `outputs.h5` (the trainer's hand-off to evaluation).

Layout (docs/outputs.md, section 2): root attributes `classes`
(JSON list), `method`, `dataset`, `fold` (JSON or "null"), `seed`; per split
`/{split}/ids`, `/{split}/labels`, `/{split}/student/{embeddings,logits}` and,
for methods with a teacher, `/{split}/teacher/{embeddings,logits}` plus an
optional `/{split}/teacher/ids` when some samples lack an auxiliary modality.

Everything is checked on load so that a truncated or hand-edited file gives
a `CacheError` naming the file and the missing piece, not an h5py KeyError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from amid.cache import attr_value
from amid.errors import CacheError

SPLITS = ("train", "val", "test")


@dataclass
class ModelOutputs:
    """One model's (student or teacher) outputs on one split."""

    ids: list[str]
    labels: np.ndarray  # (n,) int64 true labels, aligned with `ids`
    embeddings: np.ndarray  # (n, d) float32
    logits: np.ndarray  # (n, C) float32


@dataclass
class SplitOutputs:
    ids: list[str]
    labels: np.ndarray
    student: ModelOutputs | None = None
    teacher: ModelOutputs | None = None


@dataclass
class RunOutputs:
    path: Path
    classes: list[str]
    method: str
    dataset: str
    fold: int | None
    seed: int | None
    splits: dict[str, SplitOutputs] = field(default_factory=dict)
    # what the run trained on: samples, per_class, fraction (dataset.train_per_class /
    # train_fraction); empty for outputs written before the trainer recorded it
    training_set: dict[str, Any] = field(default_factory=dict)

    @property
    def has_teacher(self) -> bool:
        return any(s.teacher is not None for s in self.splits.values())

    def split(self, name: str) -> SplitOutputs:
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise CacheError(f"{self.path}: has no /{name} split (splits present: {have})")
        return self.splits[name]


def _json_attr(path: Path, attrs: dict[str, Any], key: str) -> Any:
    value = attrs.get(key)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        if key == "classes":
            raise CacheError(f"{path}: attribute 'classes' is not a JSON list") from None
        return value  # free-text attributes such as a seed written as "0"


def _strings(ds: h5py.Dataset) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in ds[...]]


def _array(path: Path, f: h5py.File, name: str, ndim: int) -> np.ndarray:
    if name not in f:
        raise CacheError(f"{path}: missing dataset /{name}")
    arr = np.asarray(f[name][...])
    if arr.ndim != ndim:
        raise CacheError(f"{path}: /{name} must be {ndim}-D, has shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise CacheError(f"{path}: /{name} contains NaN or infinite values")
    return arr


def _model(
    path: Path, f: h5py.File, split: str, role: str, split_ids: list[str], labels: np.ndarray,
    n_classes: int,
) -> ModelOutputs:
    base = f"{split}/{role}"
    emb = _array(path, f, f"{base}/embeddings", 2).astype(np.float32, copy=False)
    logits = _array(path, f, f"{base}/logits", 2).astype(np.float32, copy=False)
    if f"{base}/ids" in f:
        ids = _strings(f[f"{base}/ids"])
        index = {sid: k for k, sid in enumerate(split_ids)}
        unknown = [sid for sid in ids if sid not in index]
        if unknown:
            raise CacheError(
                f"{path}: /{base}/ids has {len(unknown)} id(s) not in /{split}/ids "
                f"(first {unknown[0]!r})"
            )
        own_labels = labels[[index[sid] for sid in ids]]
    else:
        ids, own_labels = split_ids, labels
    n = len(ids)
    if emb.shape[0] != n or logits.shape[0] != n:
        raise CacheError(
            f"{path}: /{base}: {n} ids but embeddings {emb.shape} and logits {logits.shape}"
        )
    if logits.shape[1] != n_classes:
        raise CacheError(
            f"{path}: /{base}/logits has {logits.shape[1]} columns, 'classes' lists {n_classes}"
        )
    return ModelOutputs(ids=ids, labels=own_labels, embeddings=emb, logits=logits)


def read_outputs(path: str | Path) -> RunOutputs:
    """Load and check a whole `outputs.h5` (small: a few embeddings per sample)."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"run outputs {path} do not exist (did `amid-train` finish this run?)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CacheError(f"{path} is not a readable HDF5 file ({exc})") from None
    with f:
        attrs = {k: attr_value(v) for k, v in f.attrs.items()}
        missing = [k for k in ("classes", "method", "dataset") if k not in attrs]
        if missing:
            raise CacheError(f"{path}: missing root attribute(s) {', '.join(missing)}")
        classes = _json_attr(path, attrs, "classes")
        if not isinstance(classes, list) or not classes:
            raise CacheError(f"{path}: attribute 'classes' must be a non-empty JSON list")
        fold = _json_attr(path, attrs, "fold")
        seed = _json_attr(path, attrs, "seed")
        run = RunOutputs(
            path=path, classes=[str(c) for c in classes], method=str(attrs["method"]),
            dataset=str(attrs["dataset"]), fold=fold, seed=seed,
            training_set={key: _json_attr(path, attrs, f"train_{key}")
                          for key in ("samples", "per_class", "fraction")
                          if f"train_{key}" in attrs},
        )
        for split in SPLITS:
            if split not in f:
                continue
            ids = _strings(f[f"{split}/ids"]) if f"{split}/ids" in f else None
            if ids is None:
                raise CacheError(f"{path}: missing dataset /{split}/ids")
            labels = _array(path, f, f"{split}/labels", 1).astype(np.int64)
            if len(labels) != len(ids):
                raise CacheError(f"{path}: /{split}: {len(ids)} ids but {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                raise CacheError(
                    f"{path}: /{split}/labels must lie in [0, {len(classes) - 1}] "
                    f"(the 'classes' attribute), found {labels.min()}..{labels.max()}"
                )
            out = SplitOutputs(ids=ids, labels=labels)
            for role in ("student", "teacher"):
                if role in f[split]:
                    setattr(out, role, _model(path, f, split, role, ids, labels, len(classes)))
            if out.student is None and out.teacher is None:
                raise CacheError(f"{path}: /{split} has neither /{split}/student nor teacher")
            run.splits[split] = out
    if not run.splits:
        raise CacheError(f"{path}: no split group (expected some of /train, /val, /test)")
    return run
