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

Dynamic weights (once per epoch): c_f = mean cos(t_i, s_i), c_e = mean
cos(t_i, s_j) over j in P(i), j != i, over the epoch's batches;
``w <- mu * w + (1 - mu) * softmax(-c_f, -c_e)``, starting at (0.5, 0.5).
``alignment_stats`` returns per-batch device-side sums to add up over an
epoch, ``alignment_means`` turns them into (c_f, c_e).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

__all__ = [
    "adversarial_loss",
    "alignment_means",
    "alignment_stats",
    "discriminator_loss",
    "enhanced_mask",
    "update_dynamic_weights",
]

Discriminator = Callable[[torch.Tensor], torch.Tensor]


def enhanced_mask(labels: torch.Tensor) -> torch.Tensor:
    """Bool (N,): True where the sample's class occurs at least twice in the batch (set E)."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=labels.device)
    # An (N, N) comparison instead of torch.unique, which syncs with the host
    # on every call on CUDA (and breaks torch.compile graphs).
    return (labels[:, None] == labels[None, :]).sum(dim=1) >= 2


def _logits(disc: Discriminator, x: torch.Tensor, frozen: bool) -> torch.Tensor:
    if frozen and isinstance(disc, nn.Module):
        params = {name: p.detach() for name, p in disc.named_parameters()}
        buffers = dict(disc.named_buffers())
        out = functional_call(disc, (params, buffers), (x,))
    else:
        out = disc(x)
    if out.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(
            f"a discriminator must return logits of shape (N,) or (N, 1); got {tuple(out.shape)} "
            f"for N = {x.shape[0]}"
        )
    return out.reshape(-1)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Per-sample BCE-with-logits against a constant target."""
    return F.binary_cross_entropy_with_logits(
        logits, torch.full_like(logits, target), reduction="none"
    )


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries; exactly 0 when the mask is empty."""
    count = mask.sum().clamp(min=1).to(values.dtype)
    return torch.where(mask, values, 0).sum() / count


def _prepare(s: torch.Tensor, labels: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
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
    return labels


def discriminator_loss(
    d_f: Discriminator,
    d_e: Discriminator | None,
    t: torch.Tensor,
    s: torch.Tensor,
    labels: torch.Tensor,
    enhanced: bool = True,
) -> dict[str, torch.Tensor]:
    """L_D (Eq. 14): teacher rows are "real" (1), student rows "fake" (0).

    t, s: (N, d), detached here. Returns ``disc_f`` (fundamental BCE pair),
    ``disc_e`` (enhanced BCE pair over E, unweighted; 0 when E is empty or
    ``enhanced`` is False), ``eta`` and ``total = disc_f + eta * disc_e``.
    """
    labels = _prepare(s, labels, t)
    t, s = t.detach(), s.detach()
    disc_f = _bce(_logits(d_f, t, False), 1.0).mean() + _bce(_logits(d_f, s, False), 0.0).mean()
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    if not enhanced:
        return {"disc_f": disc_f, "disc_e": zero, "eta": zero, "total": disc_f}
    if d_e is None:
        raise ValueError("enhanced=True needs the enhanced discriminator d_e")
    mask = enhanced_mask(labels)
    eta = mask.sum().to(s.dtype) / s.shape[0]
    disc_e = _masked_mean(_bce(_logits(d_e, t, False), 1.0), mask) + _masked_mean(
        _bce(_logits(d_e, s, False), 0.0), mask
    )
    return {"disc_f": disc_f, "disc_e": disc_e, "eta": eta, "total": disc_f + eta * disc_e}


def adversarial_loss(
    d_f: Discriminator,
    d_e: Discriminator | None,
    s: torch.Tensor,
    labels: torch.Tensor,
    w_f: float | torch.Tensor,
    w_e: float | torch.Tensor,
    enhanced: bool = True,
) -> dict[str, torch.Tensor]:
    """L_adv (Eq. 13): the student tries to pass as the teacher (targets 1).

    Needs no teacher. Gradients reach ``s`` only (discriminator parameters are
    used detached). Returns unweighted ``adv_f`` and ``adv_e`` (0 when E is
    empty or ``enhanced`` is False) and ``total = w_f * adv_f + w_e * adv_e``.
    """
    labels = _prepare(s, labels)
    adv_f = _bce(_logits(d_f, s, True), 1.0).mean()
    if not enhanced:
        adv_e = torch.zeros((), dtype=s.dtype, device=s.device)
        return {"adv_f": adv_f, "adv_e": adv_e, "total": w_f * adv_f}
    if d_e is None:
        raise ValueError("enhanced=True needs the enhanced discriminator d_e")
    adv_e = _masked_mean(_bce(_logits(d_e, s, True), 1.0), enhanced_mask(labels))
    return {"adv_f": adv_f, "adv_e": adv_e, "total": w_f * adv_f + w_e * adv_e}


def alignment_stats(t: torch.Tensor, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Device-side sums for c_f and c_e of one batch, detached.

    Returns a tensor ``[sum_i cos(t_i, s_i), N, sum cos(t_i, s_j), n_pairs]`` over
    pairs j in P(i), j != i, in the input dtype. Add these up over an epoch
    (no ``.item()`` needed) and pass the total to ``alignment_means``.
    """
    labels = _prepare(s, labels, t)
    with torch.no_grad():
        cos = F.normalize(t, dim=1) @ F.normalize(s, dim=1).T
        n = labels.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=labels.device)
        same = (labels[:, None] == labels[None, :]) & ~eye  # not fill_diagonal_: vmap-able
        diag = cos.diagonal()
        return torch.stack(
            [
                diag.sum(),
                torch.tensor(float(diag.numel()), dtype=cos.dtype, device=cos.device),
                torch.where(same, cos, 0).sum(),
                same.sum().to(cos.dtype),
            ]
        )


def alignment_means(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_f, c_e) from summed ``alignment_stats``.

    If the epoch had no same-class pair (c_e undefined), c_e is set to c_f, so
    the softmax of the update is neutral between the two discriminators.
    """
    c_f = stats[0] / stats[1].clamp(min=1)
    c_e = torch.where(stats[3] > 0, stats[2] / stats[3].clamp(min=1), c_f)
    return c_f, c_e


def update_dynamic_weights(
    w: Sequence[float] | torch.Tensor,
    c_f: float | torch.Tensor,
    c_e: float | torch.Tensor,
    mu: float,
) -> torch.Tensor:
    """``mu * (w_f, w_e) + (1 - mu) * softmax(-c_f, -c_e)`` as a tensor of shape (2,).

    Better-aligned pairs (larger cosine) get the smaller weight. Unpacks as
    ``w_f, w_e = update_dynamic_weights(...)``; the weights keep summing to 1.
    """
    if not 0.0 <= float(mu) <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    ref = next((x for x in (c_f, c_e, w) if isinstance(x, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else torch.float64
    device = ref.device if ref is not None else None
    if isinstance(w, torch.Tensor):
        w_t = w.to(dtype=dtype, device=device).reshape(-1)
    else:
        w_t = torch.stack([torch.as_tensor(x, dtype=dtype, device=device).reshape(()) for x in w])
    if w_t.shape != (2,):
        raise ValueError(f"w must hold two weights (w_f, w_e), got shape {tuple(w_t.shape)}")
    c = torch.stack(
        [torch.as_tensor(c, dtype=dtype, device=device).reshape(()) for c in (c_f, c_e)]
    )
    return mu * w_t + (1.0 - mu) * torch.softmax(-c, dim=0)
