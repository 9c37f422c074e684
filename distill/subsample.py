"""Fewer labelled training samples: `dataset.train_per_class` / `dataset.train_fraction`.

A stratified subsample of the TRAINING split only: per class, `train_per_class`
of its training samples (all of them if it has fewer), or `train_fraction` of
them (at least one), drawn with `train.seed`. Validation and test stay whole,
and every method sees the same rows for one seed, so a learning curve compares
methods on identical data.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from amid.config import Config
from amid.distill.data import TrainData

log = logging.getLogger("amid.distill")


def stratified_subsample(rows: np.ndarray, labels: np.ndarray, *, per_class: int | None = None,
                         fraction: float | None = None, seed: int = 0) -> np.ndarray:
    """A seeded, stratified subset of `rows` (labels[i] is row i's class), in row order."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give per_class or fraction, not both")
    rng = np.random.default_rng([seed, 0x5AB5])  # its own stream: init and batches untouched
    keep = []
    for c in np.unique(labels):
        of_class = rows[labels == c]
        k = min(per_class, len(of_class)) if per_class is not None \
            else max(1, int(round(fraction * len(of_class))))
        keep.append(rng.choice(of_class, size=k, replace=False))
    return np.sort(np.concatenate(keep)) if keep else rows[:0]


def train_rows_for(data: TrainData, cfg: Config) -> torch.Tensor | None:
    """The training rows `cfg` asks for, on the data's device; None: the whole split."""
    ds = cfg.dataset
    if ds.train_per_class is None and ds.train_fraction is None:
        return None
    rows = data.splits["train"].cpu().numpy()
    labels = data.labels.cpu().numpy()[rows]
    picked = stratified_subsample(rows, labels, per_class=ds.train_per_class,
                                  fraction=ds.train_fraction, seed=cfg.train.seed)
    short = [data.classes[c] for c in np.unique(labels)
             if ds.train_per_class is not None and (labels == c).sum() < ds.train_per_class]
    if short:
        log.warning("classes %s have fewer than dataset.train_per_class=%d training samples: "
                    "all of theirs are used", short[:5], ds.train_per_class)
    return torch.from_numpy(picked).to(data.labels.device)
