"""Metrics of stage three (docs/outputs.md): accuracy, WA / UA, top-k, confusion, retrieval R@K.

Inputs are NumPy arrays, torch tensors or lists; labels may be integers or
strings. Every function returns plain Python floats (or NumPy arrays / dicts of
floats) and raises ``ValueError`` for empty inputs or mismatched lengths.

Tie rule, shared by ``recall_at_k`` and ``top_k_accuracy``: items are ranked by
score, descending, and equal scores are ordered by index, ascending (the lower
gallery index or class index ranks first). Both functions compute the rank of
the best correct item directly instead of sorting, which makes the rule exact
and lets one pass answer every K.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "confusion_matrix",
    "per_class_accuracy",
    "recall_at_k",
    "top_k_accuracy",
    "unweighted_accuracy",
    "weighted_accuracy",
]


def _labels(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_pred differ in length: {a.shape[0]} vs {b.shape[0]}")
    if (a.dtype.kind in "USO") != (b.dtype.kind in "USO"):
        raise ValueError(f"y_true ({a.dtype}) and y_pred ({b.dtype}) hold different label types")
    return a, b


def _encode(*arrays: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Map labels of several arrays to shared integer codes (classes sorted)."""
    classes, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return classes, np.split(codes.reshape(-1), bounds)


def weighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """WA: plain accuracy, the fraction of samples predicted correctly."""
    a, b = _pair(y_true, y_pred)
    return float(np.mean(a == b))


def per_class_accuracy(y_true: Any, y_pred: Any) -> dict[Any, float]:
    """Recall of each class present in ``y_true``: {label: correct / support}, sorted by label."""
    a, b = _pair(y_true, y_pred)
    classes, (ta, pb) = _encode(a, b)
    support = np.bincount(ta, minlength=len(classes))
    correct = np.bincount(ta[ta == pb], minlength=len(classes))
    return {
        classes[c].item(): float(correct[c] / support[c]) for c in range(len(classes)) if support[c]
    }


def unweighted_accuracy(y_true: Any, y_pred: Any) -> float:
    """UA: mean of per-class recalls over the classes present in ``y_true``.

    A class that only appears in ``y_pred`` adds no term (as sklearn's
    ``balanced_accuracy_score``), though its false positives still lower the
    recall of the true classes they were taken from.
    """
    return float(np.mean(list(per_class_accuracy(y_true, y_pred).values())))


def confusion_matrix(
    y_true: Any,
    y_pred: Any,
    n_classes: int | None = None,
    labels: Sequence[Any] | None = None,
) -> np.ndarray:
    """Counts (C, C), rows = true class, columns = predicted class (sklearn's layout).

    Integer labels index the classes directly (``n_classes`` defaults to the
    largest label + 1); string labels need ``labels``, the class order. Labels
    outside the classes raise ``ValueError``.
    """
    a, b = _pair(y_true, y_pred)
    if labels is not None:
        order = {lab: i for i, lab in enumerate(np.asarray(labels).tolist())}
        unknown = sorted({str(x) for x in np.concatenate([a, b]).tolist() if x not in order})
        if unknown:
            raise ValueError(f"labels not in the class list: {', '.join(unknown[:5])}")
        a = np.array([order[x] for x in a.tolist()])
        b = np.array([order[x] for x in b.tolist()])
        n_classes = len(order) if n_classes is None else n_classes
    elif a.dtype.kind not in "iu" or b.dtype.kind not in "iu":
        raise ValueError("confusion_matrix needs integer labels, or the class order in `labels`")
    if n_classes is None:
        n_classes = int(max(a.max(), b.max())) + 1
    if min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}) for n_classes={n_classes}")
    flat = a.astype(np.int64) * n_classes + b.astype(np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _rank_of_best_hit(scores: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """0-based rank of the best-ranked True column per row under the tie rule; -1 if none.

    The best hit is the highest-scoring True column, the lowest index among
    equals; its rank counts the columns strictly above it plus the equal ones
    with a lower index.
    """
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    best = torch.where(hit, scores, neg_inf).amax(dim=1, keepdim=True)
    cols = torch.arange(scores.shape[1], device=scores.device)[None, :]
    # argmax returns the first maximal index: the lowest-index best hit
    first = (hit & (scores == best)).to(torch.uint8).argmax(dim=1, keepdim=True)
    rank = (scores > best).sum(dim=1) + ((scores == best) & (cols < first)).sum(dim=1)
    return torch.where(hit.any(dim=1), rank, -1)


def _leave_out(sim: torch.Tensor, hit: torch.Tensor, exclude: torch.Tensor | None,
               lo: int = 0) -> None:
    """Remove gallery column `exclude[i]` (global index; -1: none) from query row i, in place.

    Its score becomes -inf and it is no hit, so it neither counts as found nor
    ranks above anything.
    """
    if exclude is None:
        return
    local = exclude - lo
    rows = torch.nonzero((exclude >= 0) & (local >= 0) & (local < sim.shape[1])).squeeze(1)
    sim[rows, local[rows]] = float("-inf")
    hit[rows, local[rows]] = False


def _rank_in_gallery_chunks(q: torch.Tensor, qc: torch.Tensor, g: torch.Tensor,
                            gc: torch.Tensor, size: int,
                            exclude: torch.Tensor | None = None) -> torch.Tensor:
    """`_rank_of_best_hit` of `q @ g.T`, computed `size` gallery columns at a time."""
    n = q.shape[0]
    best = torch.full((n,), float("-inf"), dtype=q.dtype, device=q.device)
    first = torch.full((n,), -1, dtype=torch.long, device=q.device)
    for lo in range(0, g.shape[0], size):  # pass 1: best hit, lowest index among equals
        sim = q @ g[lo : lo + size].T  # (n, size)
        hit = qc[:, None] == gc[None, lo : lo + size]
        _leave_out(sim, hit, exclude, lo)
        top = torch.where(hit, sim, float("-inf")).amax(dim=1)
        at = (hit & (sim == top[:, None])).to(torch.uint8).argmax(dim=1) + lo
        better = hit.any(dim=1) & (top > best)  # strict: an earlier chunk keeps a tie
        best, first = torch.where(better, top, best), torch.where(better, at, first)
    rank = torch.zeros(n, dtype=torch.long, device=q.device)
    for lo in range(0, g.shape[0], size):  # pass 2: items ranked above the best hit
        sim = q @ g[lo : lo + size].T
        _leave_out(sim, torch.zeros_like(sim, dtype=torch.bool), exclude, lo)
        cols = torch.arange(lo, lo + sim.shape[1], device=q.device)[None, :]
        rank += (sim > best[:, None]).sum(dim=1)
        rank += ((sim == best[:, None]) & (cols < first[:, None])).sum(dim=1)
    return torch.where(first >= 0, rank, -1)


def _check_ks(ks: Iterable[int]) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def top_k_accuracy(
    labels: Any, scores: Any, k: int, classes: Sequence[Any] | None = None
) -> float:
    """Fraction of samples whose true class is among the k highest scores (N, C).

    Column c of ``scores`` is class c, or ``classes[c]`` when the class list is
    given (needed for string labels). Ties follow the module's rule (lower class
    index first), which can differ from sklearn's only on exactly equal scores.
    """
    (k,) = _check_ks([k])
    y = _labels(labels, "labels")
    sc = scores.detach().cpu() if isinstance(scores, torch.Tensor) else torch.as_tensor(
        np.asarray(scores)
    )
    if not sc.dtype.is_floating_point:
        sc = sc.double()
    if sc.dim() != 2 or sc.shape[0] != y.shape[0]:
        raise ValueError(f"scores must be (N, C) with N = {y.shape[0]}, got {tuple(sc.shape)}")
    if classes is not None:
        order = {lab: i for i, lab in enumerate(np.asarray(classes).tolist())}
        if len(order) != sc.shape[1] or any(x not in order for x in y.tolist()):
            raise ValueError("`classes` must list one label per score column, covering all labels")
        y = np.array([order[x] for x in y.tolist()])
    elif y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= sc.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {sc.shape[1]}) or pass `classes`")
    hit = F.one_hot(torch.as_tensor(y, dtype=torch.long), sc.shape[1]).bool()
    return float((_rank_of_best_hit(sc, hit) < k).double().mean())


def _embeddings(x: Any, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dim() != 2 or t.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) array, got shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.float()
    return t


def recall_at_k(
    query: Any,
    query_labels: Any,
    gallery: Any,
    gallery_labels: Any,
    ks: Iterable[int] = (1, 5, 10, 20, 50),
    chunk_size: int = 4096,
    gallery_chunk_size: int = 8192,
    *,
    exclude: Any = None,
) -> dict[str, float]:
    """kNN retrieval R@K by cosine similarity (docs/outputs.md): {"R@1": float, ...}.

    R@K is the fraction of queries with at least one gallery item of the same
    class among their K most similar gallery items. Exact and memory-bounded:
    ``chunk_size`` queries against ``gallery_chunk_size`` gallery items at a
    time (one similarity block of that size), in two passes over the gallery
    (the best same-class item, then how many items rank above it), so a
    gallery of any size never needs its full similarity matrix. K above the
    gallery size means the whole gallery. A query whose class is absent from
    the gallery never hits. Ties: lower gallery index ranks first. Runs on the
    device of ``query`` when it is a tensor; float64 inputs are kept in
    float64, others use float32.

    ``exclude`` (optional, one int per query) names a gallery index that query
    i must not retrieve (-1: none): the query itself when the gallery holds
    the queries (leave-one-out), which would otherwise find itself at rank 1.
    """
    ks = _check_ks(ks)
    if chunk_size < 1 or gallery_chunk_size < 1:
        raise ValueError(
            f"chunk sizes must be >= 1, got {chunk_size} and {gallery_chunk_size}"
        )
    q, g = _embeddings(query, "query"), _embeddings(gallery, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} differs from gallery dim {g.shape[1]}")
    ql, gl = _labels(query_labels, "query_labels"), _labels(gallery_labels, "gallery_labels")
    if len(ql) != q.shape[0] or len(gl) != g.shape[0]:
        raise ValueError(
            f"label counts ({len(ql)} query, {len(gl)} gallery) do not match the embeddings "
            f"({q.shape[0]} query, {g.shape[0]} gallery)"
        )
    if (ql.dtype.kind in "USO") != (gl.dtype.kind in "USO"):
        raise ValueError("query_labels and gallery_labels hold different label types")
    _, (qc, gc) = _encode(ql, gl)
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    device = q.device
    q = F.normalize(q.to(device, dtype), dim=1)
    g = F.normalize(g.to(device, dtype), dim=1)
    qc_t = torch.as_tensor(qc, device=device)
    gc_t = torch.as_tensor(gc, device=device)
    skip = _exclusions(exclude, q.shape[0], g.shape[0], device)

    ranks = []
    for start in range(0, q.shape[0], chunk_size):
        qs, qcs = q[start : start + chunk_size], qc_t[start : start + chunk_size]
        ex = None if skip is None else skip[start : start + chunk_size]
        if g.shape[0] <= gallery_chunk_size:  # one block: a single pass suffices
            sim, hit = qs @ g.T, qcs[:, None] == gc_t[None, :]
            _leave_out(sim, hit, ex)
            ranks.append(_rank_of_best_hit(sim, hit))
        else:
            ranks.append(_rank_in_gallery_chunks(qs, qcs, g, gc_t, gallery_chunk_size, ex))
    rank = torch.cat(ranks)
    found = rank >= 0
    return {f"R@{k}": float((found & (rank < k)).double().mean()) for k in ks}


def _exclusions(exclude: Any, n_query: int, n_gallery: int,
                device: torch.device) -> torch.Tensor | None:
    if exclude is None:
        return None
    ex = torch.as_tensor(np.asarray(exclude), dtype=torch.long, device=device)
    if ex.shape != (n_query,):
        raise ValueError(f"exclude must hold one gallery index per query ({n_query}), "
                         f"got shape {tuple(ex.shape)}")
    if bool((ex >= n_gallery).any()) or bool((ex < -1).any()):
        raise ValueError(f"exclude entries must be gallery indices in [0, {n_gallery}) or -1")
    return ex
