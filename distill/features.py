"""Cached sequences as padded arrays, and the statistics that normalise them.

Training and prediction both pad here (amid.distill.data, amid.distill.inference),
so they follow one rule. Both functions work in blocks of `_BLOCK` values, so memory
stays at one block beside the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from amid.cache import FeatureCache
from amid.errors import CacheError

_BLOCK = 1 << 22  # values (steps x dim) per block when copying or reducing: 16 MB of float32

log = logging.getLogger("amid.distill")


def subsample_steps(length: int, max_steps: int) -> np.ndarray:
    """Evenly spaced step indices that keep a long sequence's whole span."""
    if length <= max_steps:
        return np.arange(length)
    return np.round(np.linspace(0, length - 1, max_steps)).astype(np.int64)


def empty_samples(cache: FeatureCache, rows: np.ndarray) -> None:
    """Refuse rows (>= 0) of `cache` whose sample has zero feature steps: an encoder would
    read only padding (a "last valid step" before the first), a made-up result."""
    r = rows[rows >= 0]
    empty = np.flatnonzero(cache.offsets[r + 1] == cache.offsets[r])
    if len(empty):
        raise CacheError(f"{cache.path}: {len(empty)} sample(s) have no feature steps at all "
                         f"(first: {cache.ids[int(r[empty[0]])]!r}); re-extract them or leave "
                         "them out")


def pad_sequences(cache: FeatureCache, rows: np.ndarray,
                  max_steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences `rows` of `cache` as (N, T_max, D) float32 zero-padded, plus lengths (N,).

    A row of -1 (sample absent from this cache) becomes one zero step. Sequences
    longer than `max_steps` are subsampled evenly (vectorised: no Python loop over
    samples unless subsampling is needed). A present sample with no step is refused.
    """
    rows = np.asarray(rows, dtype=np.int64)
    empty_samples(cache, rows)
    present = rows >= 0
    safe = np.where(present, rows, 0)
    starts = cache.offsets[safe]
    lengths = np.where(present, cache.offsets[safe + 1] - starts, 1).astype(np.int64)
    subsampled = max_steps is not None and lengths.max(initial=0) > max_steps
    if subsampled:
        picks = [starts[k] + subsample_steps(int(lengths[k]), max_steps) if present[k] else None
                 for k in range(len(rows))]
        lengths = np.array([len(p) if p is not None else 1 for p in picks], dtype=np.int64)
        src = np.concatenate([p if p is not None else [-1] for p in picks])
    step = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    if not subsampled:
        src = np.where(np.repeat(present, lengths), np.repeat(starts, lengths) + step, -1)
    n, t_max, dim = len(rows), int(lengths.max(initial=1)), cache.feature_dim
    out = np.zeros((n, t_max, dim), dtype=np.float32)
    sample = np.repeat(np.arange(n), lengths)
    valid = np.flatnonzero(src >= 0)
    # in blocks of steps: one gather of everything would hold a second copy of the cache
    block = max(1, _BLOCK // max(1, dim))
    for lo in range(0, len(valid), block):
        v = valid[lo : lo + block]
        out[sample[v], step[v]] = cache.features[src[v]]
    return out, lengths


OUTLIER_STDS = 1e6  # a value this many standard deviations from all others is corrupt
CONSTANT_RATIO = 1e-6  # a std this small next to the level: a constant dimension


def feature_stats(x: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, source: Path,
                  ids: list[str], warn: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std (D,) over the valid steps of `rows` (the training split), in float64.

    A single value so far from the others that it would own the statistics (a
    corrupt row of 3e38, say) would leave every other sample at zero after
    normalisation and the student at chance: it is refused, naming the sample. So
    are features constant in every dimension (`constant_dims`); `warn`: log the
    dimensions constant when others are not (they stay at 0 after normalisation).
    """
    dim, steps = int(x.shape[2]), int(x.shape[1])
    rows = rows.to(x.device)
    total = int(lengths[rows].sum()) if len(rows) else 0
    if not total:
        return np.zeros(dim, np.float32), np.ones(dim, np.float32)
    per_block = max(1, _BLOCK // max(1, steps * dim))
    blocks = [rows[lo:lo + per_block] for lo in range(0, len(rows), per_block)]

    def frames(block: torch.Tensor) -> torch.Tensor:  # (k, D) float64, valid steps only
        valid = torch.arange(steps, device=x.device)[None, :] < lengths[block, None]
        return x[block][valid].double()

    # 1. the largest magnitude per dimension and where it is
    peak = torch.zeros(dim, dtype=torch.float64, device=x.device)
    for b in blocks:
        peak = torch.maximum(peak, frames(b).abs().amax(dim=0))
    def sums(*terms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
        """Each `term(frames, keep)` summed over every block's frames, (D,) float64 each;
        keep: (k, D), False at the one peak value of each dimension."""
        out = [torch.zeros(dim, dtype=torch.float64, device=x.device) for _ in terms]
        for b in blocks:
            f = frames(b)
            keep = f.abs() < peak
            for acc, term in zip(out, terms, strict=True):
                acc += term(f, keep).sum(dim=0)
        return out

    # 2. mean and spread of everything but that one value per dimension
    s1, s1_rest, n_rest = sums(lambda f, _: f, lambda f, k: torch.where(k, f, 0),
                               lambda _, k: k)
    mean, mean_rest = s1 / total, s1_rest / n_rest.clamp(min=1)
    var, var_rest = sums(lambda f, _: (f - mean) ** 2,
                         lambda f, k: torch.where(k, (f - mean_rest) ** 2, 0))
    std = (var / total).sqrt()
    std_rest = (var_rest / n_rest.clamp(min=1)).sqrt()
    wild = (std_rest > 0) & ((peak - mean_rest).abs() > OUTLIER_STDS * std_rest)
    if bool(wild.any()):
        d = int(torch.nonzero(wild)[0])
        sample = _sample_with(x, lengths, rows, d, float(peak[d]), ids)
        raise CacheError(
            f"{source}: sample {sample!r} has the value {float(peak[d]):.3g} in feature {d}, "
            f"{float((peak[d] - mean_rest[d]).abs() / std_rest[d]):.2g} standard deviations "
            "from every other training value: it would swamp the normalisation (a corrupt "
            "row?); fix or re-extract that sample")
    mean_np, std_np = mean.cpu().numpy(), std.cpu().numpy()
    constant = constant_dims(mean_np, std_np)
    if constant.all():
        raise CacheError(
            f"{source}: every one of its {dim} feature dimensions is constant over the "
            f"training samples (largest std {float(std_np.max()):.3g}): there is nothing to "
            "learn from (an extraction that wrote zeros?); re-extract it")
    if warn and constant.any():
        dims = np.flatnonzero(constant).tolist()
        log.warning("%s: %d of %d feature dimensions are constant over the training samples "
                    "and carry nothing (dims %s%s)", source, len(dims), dim, dims[:10],
                    ", ..." if len(dims) > 10 else "")
    return (mean_np.astype(np.float32),
            np.where(constant, 1.0, std_np).astype(np.float32))


def constant_dims(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(D,) bool: dimensions whose spread is nil next to their own level and to the
    features' typical spread (the median std), so rounding noise on a constant. Relative:
    an absolute floor turned features of a small scale (all stds ~1e-8) into zeros."""
    spread = std[std > 0]
    typical = float(np.median(spread)) if len(spread) else 0.0
    return std <= CONSTANT_RATIO * np.maximum(np.abs(mean), typical)


def _sample_with(x: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, dim: int,
                 value: float, ids: list[str]) -> str:
    """The id of the first training sample holding `value` (in magnitude) in `dim`."""
    for r in rows.tolist():
        if bool((x[r, : int(lengths[r]), dim].double().abs() == value).any()):
            return ids[r]
    return "?"
