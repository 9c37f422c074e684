"""Contrastive Representation Distillation (Tian et al., ICLR 2020, Eq. 10-19).

Follows the authors' public code, HobbitLong/RepDistiller ``crd/criterion.py`` (``CRDLoss``,
``ContrastLoss``, ``Embed``), ``crd/memory.py`` (``ContrastMemory``) and the negative
sampler of ``dataset/cifar100.py`` (``CIFAR100InstanceSample``, mode "exact").

Student features f_s (N, d_s) and teacher features f_t (N, d_t) go through linear embedding
heads to ``feat_dim`` (128) and are L2-normalised: e_s, e_t. Two memory banks (n_data,
feat_dim) hold, per training sample, a momentum average of the student and of the teacher
embedding. For each sample i with label y_i, K = 16384 negatives are drawn uniformly from
the bank rows of the OTHER classes (without replacement, or with replacement when that pool
has fewer than K rows), and with the candidates ``[i, k_1..k_K]``:

- student anchor e_s_i scores the teacher bank rows, teacher anchor e_t_i
  the student bank rows: ``x = exp(<anchor, row> / tau) / Z`` (tau 0.07),
  Z = n_data * mean(exp(<.,.> / tau)), one per direction, set on the first
  training batch and kept;
- NCE (Eq. 18, ``ContrastLoss``) with noise probability Pn = 1 / n_data::

      loss = -1/N sum_i [ log x_i0 / (x_i0 + K Pn)
                          + sum_{k >= 1} log K Pn / (x_ik + K Pn) ]

``total = loss(student anchors) + loss(teacher anchors)``. After scoring, bank rows idx are
updated: ``m <- normalize(momentum * m + (1 - momentum) * e)``, momentum 0.5. Banks start as
the authors': uniform in +-sqrt(3 / feat_dim), not normalised (rows of norm about 1).

Differences from the authors' code, and why:

- Everything is computed in log space (``logaddexp``) without their
  ``eps = 1e-7`` in the denominators: the same value wherever theirs is
  finite, and no overflow of ``exp(1 / 0.07)`` in low precision.
- The scores are one product with the whole bank, then gathered at the
  candidates, rather than a gather of (N, K+1, feat_dim) bank rows: the same
  numbers, without a 1 GiB gather per step at K = 16384.
- Negatives come from a counter-based generator: a hash of (the module's seed, a draw
  counter, the anchor's index, ...), both buffers. Uniform like ``np.random.choice``, but a
  function of the module's own state, so a run and the same run as a member of a stacked
  sweep (where random ops are drawn for the whole stack at once) pick the same negatives,
  and a resumed run continues the sequence.

Parameters live in the module (embedding heads are trained, the banks and Z
are buffers updated in training mode only), so the loss works in the dtype
of the module: call ``.double()`` on it for float64 inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_MASK = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixing function (int64 tensors in [0, 2^32)); products stay
    below 2^59, so int64 arithmetic never overflows."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    return (x >> 16) ^ x


class CRDLoss(nn.Module):
    """CRD in both directions; ``forward`` returns ``{"crd_s", "crd_t", "total"}``.
    ``labels`` (n_data,) are the classes of the bank rows: a row's negatives are drawn
    from the rows of the other classes."""

    def __init__(self, s_dim: int, t_dim: int, labels: torch.Tensor, feat_dim: int = 128,
                 n_negatives: int = 16384, temperature: float = 0.07,
                 momentum: float = 0.5) -> None:
        super().__init__()
        labels = torch.as_tensor(labels).long()
        n_data = labels.numel()
        if labels.dim() != 1 or n_data < 2:
            raise ValueError(
                f"CRD needs the labels of at least 2 bank rows, got {tuple(labels.shape)}")
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
        if not temperature > 0.0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"need temperature > 0 and 0 <= momentum < 1, got {temperature}, "
                             f"{momentum}")
        # bank rows sorted by class: a row's negative pool is everything outside its
        # class's segment [start, start + count) of `order`
        order = torch.argsort(labels, stable=True)
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        if counts.numel() < 2:
            raise ValueError("CRD draws negatives from other classes: the bank holds one class")
        starts = torch.cumsum(counts, 0) - counts
        self.n_data, self.n_negatives = n_data, n_negatives
        self.temperature, self.momentum = temperature, momentum
        # the authors' rule, per anchor: replacement only when the pool is smaller than K
        replace = n_data - counts[inverse] < n_negatives
        derived = {"labels": labels, "order": order, "class_start": starts[inverse],
                   "class_count": counts[inverse], "replace": replace}  # each (n_data,)
        for name, value in derived.items():  # from `labels` alone: not in the state_dict
            self.register_buffer(name, value, persistent=False)
        # which sampler paths exist, decided here on the host (never from a buffer in forward,
        # which a stacked sweep batches)
        self._some_replace, self._all_replace = bool(replace.any()), bool(replace.all())
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)  # the authors' ContrastMemory initialisation
        self.register_buffer("memory_s", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        self.register_buffer("memory_t", torch.rand(n_data, feat_dim) * (2 * stdv) - stdv)
        # log Z per direction (student anchors, teacher anchors), set on the first batch
        self.register_buffer("log_z", torch.zeros(2))
        self.register_buffer("z_known", torch.zeros((), dtype=torch.bool))
        # the negatives' generator: a seed drawn like the weights, and a counter
        self.register_buffer("seed", torch.randint(0, 1 << 31, ()))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))

    def sample_negatives(self, idx: torch.Tensor) -> torch.Tensor:
        """(N, K) bank rows of classes other than each anchor's, as the authors' sampler;
        advances the draw counter (in training mode), as a random generator would."""
        key = _hash32(_hash32(self.seed ^ (self.draws & _MASK)) ^ idx[:, None])  # (N, 1)
        if self.training:
            self.draws += 1
        k = self.n_negatives
        replace = self.replace[idx]  # (N,)
        parts = []
        if self._some_replace:
            # with replacement: position u in the pool, skipping the own class's segment
            pool = (self.n_data - self.class_count[idx])[:, None]  # (N, 1)
            u = _hash32(key ^ torch.arange(k, device=idx.device)[None, :]) % pool  # (N, K)
            u = u + (u >= self.class_start[idx][:, None]).long() * self.class_count[idx][:, None]
            parts.append(self.order[u])
        if not self._all_replace:
            # without replacement: the K pool rows with the smallest random keys (one key
            # per bank row; another salt than above, so the two draws are independent)
            rows = torch.arange(self.n_data, device=idx.device)[None, :]  # (1, n_data)
            keys = _hash32(_hash32(key ^ 0x5BD1E995) ^ rows)  # (N, n_data) in [0, 2^32)
            own = self.labels[None, :] == self.labels[idx][:, None]
            keys = torch.where(own, 1 << 33, keys)  # own class last: never among the K
            parts.append(torch.topk(keys, k, dim=1, largest=False).indices)
        if len(parts) == 1:
            return parts[0]
        return torch.where(replace[:, None], parts[0], parts[1])

    def _nce(self, logits: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
        """ContrastLoss on (N, K+1) scores <anchor, row> / tau, positive first."""
        log_x = logits - log_z  # log of exp(.) / Z
        log_noise = math.log((logits.shape[1] - 1) / self.n_data)  # log K Pn
        log_den = torch.logaddexp(log_x, torch.full_like(log_x, log_noise))  # log(x + K Pn)
        log_d1 = log_x[:, 0] - log_den[:, 0]
        log_d0 = log_noise - log_den[:, 1:]
        return -(log_d1.sum() + log_d0.sum()) / logits.shape[0]

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, idx: torch.Tensor,
                contrast_idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """f_s (N, d_s), f_t (N, d_t), idx (N,) bank rows, contrast_idx (N, K) or None."""
        idx = torch.as_tensor(idx, device=f_s.device).long()
        if f_s.shape[0] != f_t.shape[0] or idx.shape != (f_s.shape[0],):
            raise ValueError(f"f_s, f_t and idx must share the batch size, got "
                             f"{tuple(f_s.shape)}, {tuple(f_t.shape)}, {tuple(idx.shape)}")
        if contrast_idx is None:
            contrast_idx = self.sample_negatives(idx)
        contrast_idx = torch.as_tensor(contrast_idx, device=f_s.device).long()
        e_s = F.normalize(self.embed_s(f_s), dim=1)
        e_t = F.normalize(self.embed_t(f_t), dim=1)

        rows = torch.cat([idx[:, None], contrast_idx], dim=1)  # (N, K+1), positive first
        # one product with the whole bank, then the candidates' columns (no row gather); the
        # product keeps a copy of the bank for backward, as the update below is in place
        bank_t, bank_s = self.memory_t.detach().clone(), self.memory_s.detach().clone()
        logits_s = (e_s @ bank_t.T / self.temperature).gather(1, rows)
        logits_t = (e_t @ bank_s.T / self.temperature).gather(1, rows)
        with torch.no_grad():  # Z = n_data * mean exp(score), the first batch's, then kept
            now = torch.stack([torch.logsumexp(x.flatten(), 0) for x in (logits_s, logits_t)])
            now = now + math.log(self.n_data / logits_s.numel())
            log_z = torch.where(self.z_known, self.log_z, now.to(self.log_z.dtype))
        crd_s = self._nce(logits_s, log_z[0].to(logits_s.dtype))
        crd_t = self._nce(logits_t, log_z[1].to(logits_t.dtype))

        if self.training:
            with torch.no_grad():
                self.log_z.copy_(log_z)
                self.z_known.fill_(True)
                m = self.momentum
                self.memory_s[idx] = F.normalize(m * self.memory_s[idx] + (1 - m) * e_s, dim=1)
                self.memory_t[idx] = F.normalize(m * self.memory_t[idx] + (1 - m) * e_t, dim=1)
        return {"crd_s": crd_s, "crd_t": crd_t, "total": crd_s + crd_t}
