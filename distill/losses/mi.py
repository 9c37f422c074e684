"""Class-aware mutual-information lower bound (AMID paper, Eq. 2-9; docs/method.md section 3).

For anchors ``u`` and candidates ``v`` of the same batch (row i of both is
sample i), both L2-normalised here::

    h_ij = softmax_j( cos(u_i, v_j) / tau )
    P(i) = { j : y_j == y_i }   (contains i)      Ng(i) = { j : y_j != y_i }

    class_prior: l_i = -( sum_{P(i)} log h_ij + sum_{Ng(i)} log(1 - h_ij) ) / |P(i)|
    ccl        : l_i = -sum_{P(i)} log h_ij / |P(i)|  -  sum_{Ng(i)} log(1 - h_ij) / |Ng(i)|
    loss = mean_i l_i

The ``class_prior`` form (Eq. 9, AMID's own) is the paper's critic log-likelihood with class
prior ``q(C=1) = |P| / (|P| + |Ng|)``: the negative sum is weighted by |Ng|/|P| relative to
the ``ccl`` form (Chen et al. 2021), which averages each sum over its own set. Anchors whose
class fills the whole batch have an empty Ng(i) and contribute only the positive sum.

Numerics: ``log h`` comes from ``log_softmax``. ``log(1 - h)`` uses ``log1p(-h)`` wherever
``h <= 1/2`` (every entry except a row's maximum), and for the row's maximum it is computed
exactly as ``logsumexp(other logits) - logsumexp(all logits)``, so it stays finite and
accurate even when that entry holds all the mass (tiny tau, a negative equal to the anchor).
No epsilons are added anywhere.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from amid.distill.losses.checks import check_temperature

# named for what they are, not for the method (`amid` trains either): the form with the
# class prior (Eq. 9) and Chen et al.'s per-set averages; RENAMED_VARIANTS: old names
MI_VARIANTS = ("class_prior", "ccl")
RENAMED_VARIANTS = {"amid": ("class_prior", "the paper's Eq. 9 form")}


def log1m_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log(1 - softmax(logits, dim=1))`` without cancellation (see Numerics above),
    shape (N, M), ``M >= 2``."""
    log_h = logits.log_softmax(dim=1)
    top = logits.argmax(dim=1, keepdim=True)  # (N, 1)
    # a comparison, not scatter_: it has a vmap batching rule (stacked sweeps)
    is_top = torch.arange(logits.shape[1], device=logits.device) == top  # (N, M)
    # The row maximum is fed a harmless constant so its (discarded) branch has a
    # finite gradient; where() alone would turn 0 * inf into NaN in backward.
    safe = torch.where(is_top, torch.full_like(log_h, -math.log(2.0)), log_h)
    rest = torch.log1p(-torch.exp(safe))
    others = logits.masked_fill(is_top, float("-inf"))
    top_val = (torch.logsumexp(others, dim=1, keepdim=True)
               - torch.logsumexp(logits, dim=1, keepdim=True))
    return torch.where(is_top, top_val.expand_as(rest), rest)


def _check_inputs(anchors: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    if anchors.dim() != 2 or anchors.shape != candidates.shape:
        raise ValueError("anchors and candidates must both be (N, d) with the same shape, got "
                         f"{tuple(anchors.shape)} and {tuple(candidates.shape)}")
    if anchors.dtype != candidates.dtype:
        raise ValueError(f"dtype mismatch: anchors {anchors.dtype}, candidates {candidates.dtype}")
    if anchors.shape[0] == 0:
        raise ValueError("class_aware_mi_loss needs a non-empty batch")
    labels = torch.as_tensor(labels, device=anchors.device)
    if labels.shape != (anchors.shape[0],):
        raise ValueError(f"labels must have shape ({anchors.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    check_temperature(temperature)
    return labels


def class_aware_mi_loss(anchors: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor,
                        temperature: float | torch.Tensor,
                        variant: str = "class_prior") -> torch.Tensor:
    """One direction of the class-aware MI bound, anchors (N, d) vs candidates (N, d).
    ``labels`` is an integer tensor (N,). Returns a scalar in the input dtype;
    gradients flow into both anchors and candidates. ``variant`` is ``"class_prior"``
    (paper Eq. 9; ``"amid"``, its name in the public contract (DESIGN.md 3.4), means the
    same: params files must use the new name) or ``"ccl"`` (Chen et al. 2021)."""
    variant = RENAMED_VARIANTS[variant][0] if variant in RENAMED_VARIANTS else variant
    if variant not in MI_VARIANTS:
        raise ValueError(f"unknown MI variant {variant!r}; known: {', '.join(MI_VARIANTS)}")
    labels = _check_inputs(anchors, candidates, labels, temperature)
    logits = F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T / temperature  # (N, N)

    pos = labels[:, None] == labels[None, :]
    n_pos = pos.sum(dim=1).to(anchors.dtype)
    pos_sum = torch.where(pos, logits.log_softmax(dim=1), 0).sum(dim=1)
    if anchors.shape[0] == 1:  # a single sample has no negatives at all
        return -(pos_sum / n_pos).mean()

    neg = ~pos
    neg_sum = torch.where(neg, log1m_softmax(logits), 0).sum(dim=1)
    if variant == "class_prior":
        per_anchor = -(pos_sum + neg_sum) / n_pos
    else:
        # clamp only guards anchors with an empty Ng(i), whose neg_sum is 0
        n_neg = neg.sum(dim=1).clamp(min=1).to(anchors.dtype)
        per_anchor = -pos_sum / n_pos - neg_sum / n_neg
    return per_anchor.mean()


def symmetric_mi_loss(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor,
                      temperature: float | torch.Tensor,
                      variant: str = "class_prior") -> torch.Tensor:
    """``(mi(x, y) + mi(y, x)) / 2``: L_TS with (t, s), L_TA with (t, a) (docs/method.md, 3)."""
    return 0.5 * (class_aware_mi_loss(x, y, labels, temperature, variant)
                  + class_aware_mi_loss(y, x, labels, temperature, variant))
