"""NT-Xent, the contrastive loss of GMC (Poklukar et al., "Geometric Multimodal
Contrastive Representation Learning", ICML 2022, Eq. 3), in SimCLR's 2N form.

Follows ``SuperGMC.super_gmc_loss`` in the authors' miguelsvasco/gmc
``gmc_code/supervised/architectures/models/gmc.py`` (one modality's term). Given paired
projections z_a (N, d) and z_b (N, d) (GMC: one modality's projection and the joint
projection of the same samples), the 2N vectors ``z = normalize([z_a; z_b])`` are compared
by ``sim = z z^T / tau``. For each of the 2N rows the positive is its partner (i <-> i + N)
and the other 2N - 2 rows are negatives; the row itself is excluded::

    loss = -1/(2N) sum_k log( exp(sim_{k, pair(k)}) / sum_{l != k} exp(sim_{kl}) )

No difference from the authors' term: they L2-normalise in the shared encoder, here it
happens in the loss (a no-op on unit vectors), and the log-softmax replaces their
``-log(exp / sum exp)`` (the same value, without overflow at small tau). GMC sums the term
over modalities, which the method code does. Returns a scalar in the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amid.distill.losses.checks import check_pair, check_temperature


def ntxent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR/GMC NT-Xent between paired rows of z_a (N, d) and z_b (N, d)."""
    check_pair("ntxent_loss", z_a, z_b, "(N, d) tensors")
    check_temperature(temperature)
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
