"""Symmetric KL between two classifiers' predictions, used by the CCL baseline.

CCL (Chen et al., "Distilling Audio-Visual Knowledge by Compositional Contrastive Learning",
CVPR 2021) aligns the student's and the composed teacher's logits with a KL term in both
directions. With softening temperature T::

    p_a = softmax(logits_a / T), p_b = softmax(logits_b / T)
    loss = T^2 * ( KL(p_a || p_b) + KL(p_b || p_a) ) / 2

averaged over the batch; logits (N, C) -> scalar. The T^2 factor (Hinton et
al. 2015) keeps the gradient scale independent of T; at T = 1 it is a no-op.
Gradients flow into both inputs: CCL trains both sides jointly.
"""

from __future__ import annotations

import torch

from amid.distill.losses.checks import check_pair, check_temperature


def symmetric_kl_loss(logits_a: torch.Tensor, logits_b: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Batch-mean symmetric KL of softened predictions, (N, C) x (N, C) -> scalar."""
    check_pair("symmetric_kl_loss", logits_a, logits_b)
    check_temperature(temperature)
    log_a = (logits_a / temperature).log_softmax(dim=1)
    log_b = (logits_b / temperature).log_softmax(dim=1)
    # (p_a - p_b) * (log p_a - log p_b) summed over classes is KL(a||b) + KL(b||a)
    both = ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(dim=1)
    return 0.5 * temperature**2 * both.mean()
