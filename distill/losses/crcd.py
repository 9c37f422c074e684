"""Relation contrastive distillation, after CRCD (Zhu et al., "Complementary
Relation Contrastive Distillation", CVPR 2021, Eq. 3-8).

CRCD distils the teacher's inter-sample *relations* rather than single
representations. With z = L2-normalised representations (same dimension for
student and teacher: project before calling), the relation of anchor i to
sample j is the normalised difference ``r_ij = normalize(z_i - z_j)``. For
each anchor i and each other sample j, the student relation r^s_ij is
contrasted against the teacher relations of the same anchor (InfoNCE)::

    loss = mean_{i, j != i} -log( exp(<r^s_ij, r^t_ij> / tau)
                                  / sum_{k != i} exp(<r^s_ij, r^t_ik> / tau) )

Simplified relative to the paper: relations are plain normalised feature
differences (the paper passes them through small learned relation heads and
also uses gradient relations), negatives are the anchor's other in-batch
teacher relations instead of a memory bank, and only the student-to-teacher
direction is used (the teacher is fixed). ``max_anchors`` limits the anchors
to the first M rows of the batch (the batch is shuffled), bounding memory at
M (N-1)^2 logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["crcd_loss"]


def _relations(z: torch.Tensor, m: int) -> torch.Tensor:
    """(M, N-1, d): normalize(z_i - z_j) for anchors i < M and every j != i."""
    n = z.shape[0]
    # others[i] = every j != i, in order: an index matrix rather than a boolean
    # mask, so shapes are static (vmap-able in stacked sweeps)
    cols = torch.arange(n - 1, device=z.device)[None, :]  # (1, N-1)
    others = cols + (cols >= torch.arange(m, device=z.device)[:, None]).long()  # (M, N-1)
    diff = z[:m, None, :] - z[others]  # (M, N-1, d)
    return F.normalize(diff, dim=2)


def crcd_loss(
    f_s: torch.Tensor,
    f_t: torch.Tensor,
    temperature: float = 0.1,
    max_anchors: int | None = 64,
) -> torch.Tensor:
    """Relation InfoNCE, student relations vs teacher relations: (N, d) x (N, d) -> scalar."""
    if f_s.dim() != 2 or f_s.shape != f_t.shape:
        raise ValueError(
            "crcd_loss needs student and teacher representations of the same shape (N, d), got "
            f"{tuple(f_s.shape)} and {tuple(f_t.shape)}; project them to a common d first"
        )
    if not float(temperature) > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if max_anchors is not None and max_anchors < 1:
        raise ValueError(f"max_anchors must be >= 1 or None, got {max_anchors}")
    n = f_s.shape[0]
    if n < 2:
        # no pair, no relation: a zero that still belongs to the graph
        return f_s.sum() * 0.0
    m = n if max_anchors is None else min(n, max_anchors)
    r_s = _relations(F.normalize(f_s, dim=1), m)
    r_t = _relations(F.normalize(f_t, dim=1), m)
    logits = torch.einsum("mjd,mkd->mjk", r_s, r_t) / temperature  # (M, N-1, N-1)
    target = torch.arange(n - 1, device=f_s.device).expand(m, n - 1)
    return F.cross_entropy(logits.reshape(-1, n - 1), target.reshape(-1))
