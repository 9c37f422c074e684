"""Conditional-entropy term with two discriminators (paper Eq. 10-14; docs/method.md, 4).

Convention: a discriminator maps representations (N, d) to LOGITS of shape
(N,) or (N, 1); the paper's "probability that a representation comes from the
teacher" is ``sigmoid(logit)``. Every BCE is ``binary_cross_entropy_with_logits``
(log-sum-exp form), so saturated discriminators never give log 0.

    E = { i : |P(i)| >= 2 }, eta = |E| / N
    L_D   = BCE(D_f(t), 1) + BCE(D_f(s), 0) + eta * ( BCE(D_e(t_E), 1) + BCE(D_e(s_E), 0) )
    L_adv = w_f * BCE(D_f(s), 1) + w_e * BCE(D_e(s_E), 1)

Each BCE is a mean over its samples. The E-restricted terms run D_e on the
whole batch and average with a mask (an MLP treats rows independently, so this
equals running it on s_E), which keeps shapes static, needs no host sync, and
makes an empty E give exactly 0 instead of a mean over nothing.

Gradient routing, so the trainer needs no freezing:
- ``discriminator_loss`` detaches t and s: only discriminator parameters get gradients.
- ``adversarial_loss`` calls the discriminators with detached copies of their
  parameters (``torch.func.functional_call``): gradients reach s (the student
  side) and never accumulate in the discriminators' ``.grad``. Plain callables
  that are not ``nn.Module`` are called as they are.

Dynamic weights (once per epoch): c_f = mean cos(t_i, s_i), c_e = mean cos(t_i, s_j) over j
in P(i), j != i, over the epoch's batches; ``w <- mu * w + (1 - mu) * softmax(-c_f, -c_e)``,
starting at (0.5, 0.5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Discriminator = Callable[[torch.Tensor], torch.Tensor]


def enhanced_mask(labels: torch.Tensor) -> torch.Tensor:
    """Bool (N,): True where the sample's class occurs at least twice in the batch (set E)."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    # An (N, N) comparison instead of torch.unique, which syncs with the host
    # on every call on CUDA (and breaks torch.compile graphs). N = 0 gives (0,).
    return (labels[:, None] == labels[None, :]).sum(dim=1) >= 2


def _bce(disc: Discriminator, x: torch.Tensor, target: float,
         frozen: bool = False) -> torch.Tensor:
    """Per-sample BCE-with-logits of disc(x) (N,) against a constant target; `frozen`: through
    detached copies of the parameters of an `nn.Module` (gradients reach x only)."""
    if frozen and isinstance(disc, nn.Module):
        params = {name: p.detach() for name, p in disc.named_parameters()}
        out = functional_call(disc, (params, dict(disc.named_buffers())), (x,))
    else:
        out = disc(x)
    if out.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(
            f"a discriminator must return logits of shape (N,) or (N, 1); got {tuple(out.shape)} "
            f"for N = {x.shape[0]}"
        )
    logits = out.reshape(-1)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target),
                                              reduction="none")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries; exactly 0 when the mask is empty."""
    count = mask.sum().clamp(min=1).to(values.dtype)
    return torch.where(mask, values, 0).sum() / count


def _prepare(s: torch.Tensor, labels: torch.Tensor, t: torch.Tensor | None = None,
             d_e: Discriminator | None = None, enhanced: bool = False) -> torch.Tensor:
    """The checked inputs' labels, as a tensor on s's device."""
    if t is not None and t.shape != s.shape:
        raise ValueError(f"t and s must match in shape: {tuple(t.shape)} vs {tuple(s.shape)}")
    labels = torch.as_tensor(labels, device=s.device)
    if s.dim() != 2 or labels.shape != (s.shape[0],):
        raise ValueError(
            f"expected representations (N, d) and labels (N,), got {tuple(s.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if s.shape[0] == 0:
        raise ValueError("adversarial losses need a non-empty batch")
    if enhanced and d_e is None:
        raise ValueError("enhanced=True needs the enhanced discriminator d_e")
    return labels


def discriminator_loss(d_f: Discriminator, d_e: Discriminator | None, t: torch.Tensor,
                       s: torch.Tensor, labels: torch.Tensor,
                       enhanced: bool = True) -> dict[str, torch.Tensor]:
    """L_D (Eq. 14): teacher rows t (N, d) are "real" (1), student rows s (N, d) "fake" (0).
    Returns ``disc_f`` (fundamental BCE pair), ``disc_e`` (enhanced BCE pair over E,
    unweighted; 0 when E is empty or ``enhanced`` is False), ``eta`` and
    ``total = disc_f + eta * disc_e``."""
    labels = _prepare(s, labels, t, d_e, enhanced)
    t, s = t.detach(), s.detach()
    disc_f = _bce(d_f, t, 1.0).mean() + _bce(d_f, s, 0.0).mean()
    if not enhanced:
        zero = s.new_zeros(())
        return {"disc_f": disc_f, "disc_e": zero, "eta": zero, "total": disc_f}
    mask = enhanced_mask(labels)
    eta = mask.sum().to(s.dtype) / s.shape[0]
    disc_e = _masked_mean(_bce(d_e, t, 1.0), mask) + _masked_mean(_bce(d_e, s, 0.0), mask)
    return {"disc_f": disc_f, "disc_e": disc_e, "eta": eta, "total": disc_f + eta * disc_e}


def adversarial_loss(d_f: Discriminator, d_e: Discriminator | None, s: torch.Tensor,
                     labels: torch.Tensor, w_f: float | torch.Tensor, w_e: float | torch.Tensor,
                     enhanced: bool = True) -> dict[str, torch.Tensor]:
    """L_adv (Eq. 13): the student s (N, d) tries to pass as the teacher (targets 1).
    Returns unweighted ``adv_f`` and ``adv_e`` (0 when E is empty or ``enhanced`` is
    False) and ``total = w_f * adv_f + w_e * adv_e``."""
    labels = _prepare(s, labels, None, d_e, enhanced)
    adv_f = _bce(d_f, s, 1.0, frozen=True).mean()
    if not enhanced:
        return {"adv_f": adv_f, "adv_e": s.new_zeros(()), "total": w_f * adv_f}
    adv_e = _masked_mean(_bce(d_e, s, 1.0, frozen=True), enhanced_mask(labels))
    return {"adv_f": adv_f, "adv_e": adv_e, "total": w_f * adv_f + w_e * adv_e}


def alignment_stats(t: torch.Tensor, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[sum_i cos(t_i, s_i), N, sum cos(t_i, s_j), n_pairs]`` of one batch (pairs j in
    P(i), j != i), detached, in the input dtype: sum them over an epoch (no ``.item()``)."""
    labels = _prepare(s, labels, t)
    with torch.no_grad():
        cos = F.normalize(t, dim=1) @ F.normalize(s, dim=1).T  # (N, N)
        eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
        same = (labels[:, None] == labels[None, :]) & ~eye  # not fill_diagonal_: vmap-able
        diag = cos.diagonal()
        n = torch.tensor(float(diag.numel()), dtype=cos.dtype, device=cos.device)
        return torch.stack([diag.sum(), n, torch.where(same, cos, 0).sum(),
                            same.sum().to(cos.dtype)])


def alignment_means(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_f, c_e) from summed ``alignment_stats``. If the epoch had no same-class pair (c_e
    undefined), c_e is c_f: the update is then neutral between the two discriminators."""
    c_f = stats[0] / stats[1].clamp(min=1)
    c_e = torch.where(stats[3] > 0, stats[2] / stats[3].clamp(min=1), c_f)
    return c_f, c_e


def update_dynamic_weights(w: Sequence[float] | torch.Tensor, c_f: float | torch.Tensor,
                           c_e: float | torch.Tensor, mu: float) -> torch.Tensor:
    """``mu * (w_f, w_e) + (1 - mu) * softmax(-c_f, -c_e)`` as a tensor of shape (2,).
    Better-aligned pairs (larger cosine) get the smaller weight. Unpacks as
    ``w_f, w_e = update_dynamic_weights(...)``; the weights keep summing to 1."""
    if not 0.0 <= float(mu) <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    ref = next((x for x in (c_f, c_e, w) if isinstance(x, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else torch.float64
    device = ref.device if ref is not None else None
    as_t = partial(torch.as_tensor, dtype=dtype, device=device)
    w_t = as_t(w).reshape(-1)
    if w_t.shape != (2,):
        raise ValueError(f"w must hold two weights (w_f, w_e), got shape {tuple(w_t.shape)}")
    c = torch.stack([as_t(x).reshape(()) for x in (c_f, c_e)])
    return mu * w_t + (1.0 - mu) * torch.softmax(-c, dim=0)
