"""Prediction-space alignment: Jensen-Shannon divergence (paper Eq. 16; docs/method.md, 5).

    p = softmax(logits_p), q = softmax(logits_q), m = (p + q) / 2
    JSD(p, q) = ( KL(p || m) + KL(q || m) ) / 2        (natural log, in [0, ln 2])

averaged over the batch. Shapes: logits (N, C) -> scalar. ``log m`` is a
``logsumexp`` of the two log-probabilities, so nothing underflows to log 0 and
no epsilon is needed. Gradients flow into both inputs (online distillation).
"""

from __future__ import annotations

import math

import torch

from amid.distill.losses.checks import check_pair


def jsd_loss(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Batch-mean JSD between ``softmax(logits_p)`` and ``softmax(logits_q)``, both (N, C)."""
    check_pair("jsd_loss", logits_p, logits_q)
    log_p = logits_p.log_softmax(dim=1)
    log_q = logits_q.log_softmax(dim=1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=1)
    return (0.5 * (kl_pm + kl_qm)).mean()
