"""Soft-target knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the
Knowledge in a Neural Network", Eq. 1 and section 2.1); with a teacher that sees the
privileged modalities this is generalised distillation (Lopez-Paz et al., ICLR 2016).

With temperature T, teacher logits z_t and student logits z_s (both (N, C))::

    p_t = softmax(z_t / T),  log p_s = log_softmax(z_s / T)
    kd  = T^2 * mean_i sum_c p_t[i, c] * (log p_t[i, c] - log p_s[i, c])     = T^2 KL(p_t || p_s)

The T^2 factor keeps the gradient's scale independent of T (Hinton et al., section 2), so
the method's weight lambda means the same at every T. Gradients flow into both inputs; a
caller that treats the teacher as a target passes ``z_t.detach()``.
"""

from __future__ import annotations

import torch

from amid.distill.losses.checks import check_pair, check_temperature


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float | torch.Tensor) -> torch.Tensor:
    """T^2 * batch-mean KL(softmax(teacher / T) || softmax(student / T)); (N, C) x 2 -> scalar."""
    check_pair("kd_loss", student_logits, teacher_logits)
    check_temperature(temperature)
    log_t = (teacher_logits / temperature).log_softmax(dim=1)  # (N, C)
    log_s = (student_logits / temperature).log_softmax(dim=1)  # (N, C)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (N,)
    return temperature**2 * kl.mean()
