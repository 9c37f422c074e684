"""Contrastive Representation Distillation (Tian et al., ICLR 2020, Eq. 10-19).

Student features f_s (N, d_s) and teacher features f_t (N, d_t) go through
linear embedding heads to ``feat_dim`` (128) and are L2-normalised. Two memory
banks (n_data, feat_dim) hold, per training sample, a momentum average of the
student and of the teacher embedding. For each sample i, K negatives are
drawn uniformly from the other dataset indices, and:

- student anchor e_s_i scores the teacher bank rows [i, k_1..k_K];
- teacher anchor e_t_i scores the student bank rows [i, k_1..k_K];

``logit = <anchor, bank row> / tau`` with tau = 0.07, positive at column 0.
After scoring, bank rows idx are updated:
``m <- normalize(momentum * m + (1 - momentum) * e)``, momentum 0.5.

Simplified relative to the paper: the NCE objective with its estimated
normalisation constant Z (Eq. 18-19) is replaced by the softmax / InfoNCE
cross-entropy over the K + 1 candidates (the variant the authors' code also
ships as "softmax"), which needs no Z and no prior-noise term; negatives
exclude the positive index (the paper samples with possible collisions).

Negatives come from a counter-based generator: a hash of (the module's seed,
a draw counter, the anchor's index, k), both buffers. Uniform like
`torch.randint`, but a function of the module's own state, so a run and the
same run as a member of a stacked sweep (where random ops are drawn for the
whole stack at once) pick the same negatives, and a resumed run continues
the sequence.

Parameters live in the module (embedding heads are trained, the banks are
buffers updated in training mode only), so the loss works in the dtype of
the module: call ``.double()`` on it for float64 inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CRDLoss"]

_MASK = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function (int64 tensors in [0, 2^32)); products stay
    below 2^59, so int64 arithmetic never overflows."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    return (x >> 16) ^ x


class CRDLoss(nn.Module):
    """CRD in both directions; ``forward`` returns ``{"crd_s", "crd_t", "total"}``."""

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        n_data: int,
        feat_dim: int = 128,
        n_negatives: int = 4096,
        temperature: float = 0.07,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        if n_data < 2:
            raise ValueError(f"CRD needs at least 2 training samples (n_data), got {n_data}")
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        if not temperature > 0.0 or not 0.0 <= momentum < 1.0:
            raise ValueError(
                f"need temperature > 0 and 0 <= momentum < 1, got {temperature}, {momentum}"
            )
        self.n_data = n_data
        self.n_negatives = n_negatives
        self.temperature = temperature
        self.momentum = momentum
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        # Random unit rows: before a sample is first seen its bank row is noise,
        # as in the paper's uniform initialisation.
        std = 1.0 / math.sqrt(feat_dim)
        self.register_buffer("memory_s", F.normalize(torch.randn(n_data, feat_dim) * std, dim=1))
        self.register_buffer("memory_t", F.normalize(torch.randn(n_data, feat_dim) * std, dim=1))
        # the negatives' generator: a seed drawn like the weights, and a counter
        self.register_buffer("seed", torch.randint(0, 1 << 31, ()))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def sample_negatives(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, K) indices uniform over the dataset minus each row's own index.

        Advances the draw counter (in training mode), as a random generator would.
        """
        key = _hash32(_hash32(self.seed ^ (self.draws & _MASK)) ^ idx[:, None])  # (N, 1)
        k = torch.arange(self.n_negatives, device=idx.device)[None, :]  # (1, K)
        draw = _hash32(key ^ k) % (self.n_data - 1)  # (N, K) in [0, n_data - 2]
        if self.training:
            self.draws += 1
        # shifting values >= idx by one skips the positive without rejection sampling
        return draw + (draw >= idx[:, None]).long()

    def forward(
        self,
        f_s: torch.Tensor,
        f_t: torch.Tensor,
        idx: torch.Tensor,
        contrast_idx: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """f_s (N, d_s), f_t (N, d_t), idx (N,) dataset indices, contrast_idx (N, K) or None."""
        idx = torch.as_tensor(idx, device=f_s.device).long()
        if f_s.shape[0] != f_t.shape[0] or idx.shape != (f_s.shape[0],):
            raise ValueError(
                f"f_s, f_t and idx must share the batch size, got {tuple(f_s.shape)}, "
                f"{tuple(f_t.shape)}, {tuple(idx.shape)}"
            )
        if contrast_idx is None:
            contrast_idx = self.sample_negatives(idx)
        contrast_idx = torch.as_tensor(contrast_idx, device=f_s.device).long()
        e_s = F.normalize(self.embed_s(f_s), dim=1)
        e_t = F.normalize(self.embed_t(f_t), dim=1)

        rows = torch.cat([idx[:, None], contrast_idx], dim=1)  # (N, K+1), positive first
        bank_t = self.memory_t[rows].detach()
        bank_s = self.memory_s[rows].detach()
        logits_s = torch.einsum("nd,nkd->nk", e_s, bank_t) / self.temperature
        logits_t = torch.einsum("nd,nkd->nk", e_t, bank_s) / self.temperature
        target = torch.zeros(idx.shape[0], dtype=torch.long, device=f_s.device)
        crd_s = F.cross_entropy(logits_s, target)
        crd_t = F.cross_entropy(logits_t, target)

        if self.training:
            with torch.no_grad():
                m = self.momentum
                self.memory_s[idx] = F.normalize(m * self.memory_s[idx] + (1 - m) * e_s, dim=1)
                self.memory_t[idx] = F.normalize(m * self.memory_t[idx] + (1 - m) * e_t, dim=1)
        return {"crd_s": crd_s, "crd_t": crd_t, "total": crd_s + crd_t}
