"""Cached features as dense device tensors, aligned by sample id (docs/data.md).

Every modality is padded ONCE to a tensor (N, T_max, D) plus lengths and kept
on the training device for the whole run; a batch is an index slice of those
tensors. The paper-scale caches are tens to hundreds of MB, so this costs
little memory and removes the per-sample DataLoader (and its worker and HDF5
pitfalls) from the hot loop entirely.

Rows follow manifest order. A sample missing from a target cache is dropped
(the student cannot see it); a sample missing an auxiliary modality is kept
with a zero sequence of length 1 and `present=False`, so it still trains the
student while the teacher-side terms skip it.

Each modality remembers which cache it came from (path, identity, a SHA-256
of the file): a run records them, a resumed run and `amid-predict` check them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amid.cache import cache_path, read_cache, read_ids
from amid.config import Config
from amid.distill.features import feature_stats, pad_sequences
from amid.distill.provenance import check_cache_identities, stale_sources
from amid.errors import CacheError, ManifestError
from amid.identity import identity_of
from amid.manifest import SPLITS, Manifest, read_manifest

log = logging.getLogger("amid.distill")

MIN_COVERAGE = 0.5  # a cache holding fewer manifest ids than this is the wrong file


@dataclass
class ModalityData:
    """One modality, padded: `x` (N, T_max, D) and `lengths` (N,) on the device."""

    name: str
    x: torch.Tensor
    lengths: torch.Tensor
    present: torch.Tensor  # (N,) bool
    mean: np.ndarray  # (D,) train-split statistics the encoder normalises with
    std: np.ndarray
    source: Path
    identity: dict[str, Any] = field(default_factory=dict)  # the cache's extractor identity
    fingerprint: str = ""  # SHA-256 of the cache file

    def record(self) -> dict[str, Any]:
        """What a run stores about this input (config.json, student.json, checkpoint)."""
        return {"cache": str(self.source), "identity": self.identity,
                "fingerprint": self.fingerprint}

    @property
    def dim(self) -> int:
        return int(self.x.shape[2])

    @property
    def max_len(self) -> int:
        return int(self.x.shape[1])


@dataclass
class Batch:
    """An index slice of the data: inputs per modality as (x, lengths), labels."""

    index: torch.Tensor  # (B,) rows into TrainData
    labels: torch.Tensor  # (B,) int64
    target: dict[str, tuple[torch.Tensor, torch.Tensor]]
    auxiliary: dict[str, tuple[torch.Tensor, torch.Tensor]]
    aux_present: torch.Tensor  # (B,) bool: every auxiliary modality present
    # rows with every auxiliary modality; None when all are (no indexing, no sync)
    teacher_rows: torch.Tensor | None = None


@dataclass
class TrainData:
    ids: list[str]
    labels: torch.Tensor  # (N,) int64 on the device
    classes: list[str]
    splits: dict[str, torch.Tensor]  # split -> (n,) row indices on the device, non-empty only
    target: dict[str, ModalityData]
    auxiliary: dict[str, ModalityData]
    aux_present: torch.Tensor  # (N,) bool
    device: torch.device
    dataset: str = ""
    fold: int | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:  # once (a host sync), not at every batch
        self.all_aux_present = bool(self.aux_present.all()) if self.auxiliary else True

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: torch.Tensor, pair_rows: bool = True) -> Batch:
        """Slice rows `index` (B,), or a stack's (M, B), on the device. `teacher_rows` costs
        a sync, so it is found only with missing aux and `pair_rows`; a `Stack` passes
        False (its members would select different rows: it stacks only methods that read
        no auxiliary modality there)."""
        present = self.aux_present[index]
        select = pair_rows and not self.all_aux_present
        rows = present.nonzero().squeeze(1) if select else None
        return Batch(index, self.labels[index], take_rows(self.target, index),
                     take_rows(self.auxiliary, index), present, rows)

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        return {m: d.record() for m, d in {**self.target, **self.auxiliary}.items()}

    def with_train_rows(self, rows: torch.Tensor) -> TrainData:
        """A view training on `rows` only (a subsample of the training split): the
        features shared, the normalisation statistics those of `rows` alone."""
        def view(d: ModalityData) -> ModalityData:
            mean, std = feature_stats(d.x, d.lengths, rows[d.present[rows]], d.source, self.ids)
            return dataclasses.replace(d, mean=mean, std=std)

        return dataclasses.replace(
            self, splits={**self.splits, "train": rows},
            target={m: view(d) for m, d in self.target.items()},
            auxiliary={m: view(d) for m, d in self.auxiliary.items()})


def take_rows(mods: dict[str, ModalityData],
              index: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each modality's (x, lengths) at rows `index`: (B,), or a stack's (M, B)."""
    return {m: (d.x[index], d.lengths[index]) for m, d in mods.items()}


def file_fingerprint(path: Path) -> str:
    """SHA-256 of a file's bytes: caches are byte-identical for identical features."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _align_cache(path: Path, ids: list[str], role: str) -> tuple[list[str], np.ndarray]:
    """The cache's ids, and each manifest id's row in it (-1: absent), without the features."""
    cache_ids = read_ids(path)
    lookup = {sid: k for k, sid in enumerate(cache_ids)}
    rows = np.array([lookup.get(sid, -1) for sid in ids], dtype=np.int64)
    found = int((rows >= 0).sum())
    if found < MIN_COVERAGE * len(ids):
        raise CacheError(
            f"{path}: holds only {found} of the manifest's {len(ids)} sample ids (the {role} "
            f"cache of another dataset, or an unfinished extraction?); first ids in the cache: "
            f"{cache_ids[:3]}, in the manifest: {ids[:3]}")
    return cache_ids, rows


def data_from_config(cfg: Config, device: torch.device) -> TrainData:
    """The manifest and caches `cfg.dataset` names, as a `TrainData` on `device`; splits or
    classes that cannot train are a ManifestError, caches that do not match the manifest
    or `extract.<m>` a CacheError."""
    ds = cfg.dataset
    target, auxiliary, fold = ds.target, ds.auxiliary, ds.fold
    manifest: Manifest = read_manifest(ds.manifest, ds.root, check_media=False)
    masks = {s: manifest.split_mask(s, fold) for s in SPLITS}
    ids_all = manifest.ids
    keep = np.any(np.stack(list(masks.values())), axis=0)  # in a split
    # first the ids of every cache (which samples survive), then the features one
    # modality at a time: peak host memory is one cache and its padded copy
    caches: dict[str, tuple[Path, list[str], np.ndarray]] = {}
    dropped: dict[str, int] = {}
    for m in [*target, *auxiliary]:
        path = cache_path(ds.cache_dir, ds.name, m, cfg.extract[m].extractor)
        caches[m] = path, *_align_cache(path, ids_all, "target" if m in target else "auxiliary")
        missing = keep & (caches[m][2] < 0)
        if m in target and missing.any():
            dropped[m] = int(missing.sum())
            log.warning("%d samples missing from target cache %s are dropped", dropped[m], path)
            keep &= ~missing
        elif missing.any():
            log.warning("%d samples have no %s features (%s): student-only", missing.sum(), m, path)
    rows_kept = np.flatnonzero(keep)
    if not len(rows_kept):
        raise ManifestError(f"{manifest.path}: no sample is both in a split and in every "
                            "target cache")
    ids = [ids_all[i] for i in rows_kept]
    labels = manifest.label_indices()[rows_kept]
    split_rows = {s: np.flatnonzero(masks[s][rows_kept]) for s in SPLITS}
    if not len(split_rows["train"]):
        raise ManifestError(f"{manifest.path}: no training samples (split 'train', fold {fold})")
    train_classes = set(labels[split_rows["train"]].tolist())
    classes = manifest.classes
    if len(train_classes) < 2:  # every score would be 1.0 by construction
        raise ManifestError(
            f"{manifest.path}: the training samples hold only "
            f"{len(train_classes)} class ({', '.join(classes[c] for c in train_classes)}); "
            "a classifier needs at least two")
    missing_cls = sorted(classes[c] for c in set(labels.tolist()) - train_classes)
    if missing_cls:
        where = {s: sorted({classes[c] for c in labels[r]} & set(missing_cls))
                 for s, r in split_rows.items() if s != "train"}
        raise ManifestError(
            f"{manifest.path}: class(es) {missing_cls} have no training sample "
            f"(they appear only in {', '.join(s for s, v in where.items() if v)}); "
            "a classifier cannot learn them")
    mods: dict[str, ModalityData] = {}
    for m, (path, cache_ids, rows) in caches.items():
        cache = read_cache(path)
        if cache.ids != cache_ids:  # replaced by another extraction since the first pass
            raise CacheError(f"{path} changed while loading; retry once extraction is done")
        r = rows[rows_kept]
        stale_sources(manifest, m, cache, r)  # made from what the manifest gives now?
        identity = identity_of(cache.attrs)
        x, lengths = pad_sequences(cache, r, cfg.train.max_steps)
        del cache
        xt, lt = torch.from_numpy(x), torch.from_numpy(lengths)
        train_rows = torch.from_numpy(split_rows["train"][r[split_rows["train"]] >= 0])
        mean, std = feature_stats(xt, lt, train_rows, path, ids, warn=True)
        mods[m] = ModalityData(m, xt.to(device), lt.to(device),
                               torch.from_numpy(r >= 0).to(device), mean, std, path, identity,
                               file_fingerprint(path))
    aux_present = torch.ones(len(ids), dtype=torch.bool, device=device)
    for m in auxiliary:
        aux_present &= mods[m].present
    splits = {s: torch.from_numpy(r).to(device) for s, r in split_rows.items() if len(r)}
    data = TrainData(ids=ids, labels=torch.from_numpy(labels).to(device), classes=classes,
                     splits=splits, target={m: mods[m] for m in target},
                     auxiliary={m: mods[m] for m in auxiliary}, aux_present=aux_present,
                     device=device, dataset=ds.name, fold=fold, dropped=dropped)
    check_cache_identities(data, cfg)
    return data
