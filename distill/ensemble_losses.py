"""The AMID-family losses and Adam, batched over the members of a stack (leading dim M).

Each function is the formula of its single-run counterpart (DESIGN 4.1-4.4,
`amid.distill.losses`) with a member dimension in front and per-member
hyperparameters as (M,) tensors; `tests/distill/test_sweep.py` checks the
stacked members against lone runs of the plain trainer. Scalars come back as
(M,) tensors, one value per member.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from amid.distill.losses.mi import log1m_softmax

Tensor = torch.Tensor


def ce(logits: Tensor, labels: Tensor, keep: Tensor | None = None) -> Tensor:
    """Mean cross-entropy per member: logits (M, B, C), labels (M, B) -> (M,)."""
    size, batch, classes = logits.shape
    per = F.cross_entropy(logits.reshape(-1, classes), labels.reshape(-1),
                          reduction="none").view(size, batch)
    if keep is None:
        return per.mean(dim=1)
    weight = keep.to(per.dtype)
    return (per * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)


def jsd(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Batch-mean Jensen-Shannon divergence per member, (M, B, C) x 2 -> (M,)."""
    log_p = logits_p.log_softmax(dim=-1)
    log_q = logits_q.log_softmax(dim=-1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2.0)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(dim=-1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(dim=-1)
    return (0.5 * (kl_pm + kl_qm)).mean(dim=-1)


def mi(anchors: Tensor, candidates: Tensor, labels: Tensor, tau: Tensor, variant: str) -> Tensor:
    """One direction of the class-aware MI bound per member: (M, N, d) x 2 -> (M,)."""
    size, n, _ = anchors.shape
    u = F.normalize(anchors, dim=-1)
    v = F.normalize(candidates, dim=-1)
    logits = u @ v.transpose(1, 2) / tau[:, None, None]  # (M, N, N)
    pos = labels[:, :, None] == labels[:, None, :]
    n_pos = pos.sum(dim=-1).to(anchors.dtype)
    pos_sum = torch.where(pos, logits.log_softmax(dim=-1), 0).sum(dim=-1)  # (M, N)
    neg = ~pos
    rest = log1m_softmax(logits.reshape(size * n, n)).view(size, n, n)
    neg_sum = torch.where(neg, rest, 0).sum(dim=-1)
    if variant == "amid":
        per_anchor = -(pos_sum + neg_sum) / n_pos
    else:
        n_neg = neg.sum(dim=-1).clamp(min=1).to(anchors.dtype)
        per_anchor = -pos_sum / n_pos - neg_sum / n_neg
    return per_anchor.mean(dim=-1)


def symmetric_mi(x: Tensor, y: Tensor, labels: Tensor, tau: Tensor, variant: str) -> Tensor:
    return 0.5 * (mi(x, y, labels, tau, variant) + mi(y, x, labels, tau, variant))


def enhanced_mask(labels: Tensor) -> Tensor:
    """(M, N) bool: the sample's class occurs at least twice in its member's batch.

    Pairwise counts instead of `torch.unique`: no dynamic shapes, no host sync.
    """
    return (labels[:, :, None] == labels[:, None, :]).sum(dim=-1) >= 2


def bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target),
                                              reduction="none")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    count = mask.sum(dim=-1).clamp(min=1).to(values.dtype)
    return torch.where(mask, values, 0).sum(dim=-1) / count


def discriminator_terms(d_f_t: Tensor, d_f_s: Tensor, d_e_t: Tensor | None,
                        d_e_s: Tensor | None, labels: Tensor) -> dict[str, Tensor]:
    """L_D from discriminator logits (M, N) on detached t and s (Eq. 14)."""
    disc_f = bce(d_f_t, 1.0).mean(dim=-1) + bce(d_f_s, 0.0).mean(dim=-1)
    if d_e_t is None or d_e_s is None:
        zero = torch.zeros_like(disc_f)
        return {"disc_f": disc_f, "disc_e": zero, "eta": zero, "total": disc_f}
    mask = enhanced_mask(labels)
    eta = mask.sum(dim=-1).to(disc_f.dtype) / labels.shape[1]
    disc_e = masked_mean(bce(d_e_t, 1.0), mask) + masked_mean(bce(d_e_s, 0.0), mask)
    return {"disc_f": disc_f, "disc_e": disc_e, "eta": eta, "total": disc_f + eta * disc_e}


def adversarial_terms(d_f_s: Tensor, d_e_s: Tensor | None, labels: Tensor,
                      w: Tensor) -> dict[str, Tensor]:
    """L_adv from frozen-discriminator logits (M, N) of the student; w (M, 2) (Eq. 13)."""
    adv_f = bce(d_f_s, 1.0).mean(dim=-1)
    if d_e_s is None:
        return {"adv_f": adv_f, "adv_e": torch.zeros_like(adv_f), "total": w[:, 0] * adv_f}
    adv_e = masked_mean(bce(d_e_s, 1.0), enhanced_mask(labels))
    return {"adv_f": adv_f, "adv_e": adv_e, "total": w[:, 0] * adv_f + w[:, 1] * adv_e}


@torch.no_grad()
def alignment_stats(t: Tensor, s: Tensor, labels: Tensor) -> Tensor:
    """Per member [sum cos(t_i, s_i), N, sum same-class cos(t_i, s_j), pairs]: (M, 4)."""
    cos = F.normalize(t, dim=-1) @ F.normalize(s, dim=-1).transpose(1, 2)  # (M, N, N)
    n = cos.shape[1]
    same = (labels[:, :, None] == labels[:, None, :]) & ~torch.eye(
        n, dtype=torch.bool, device=cos.device)
    diag = cos.diagonal(dim1=1, dim2=2)
    return torch.stack([diag.sum(dim=-1), torch.full_like(diag[:, 0], float(n)),
                        torch.where(same, cos, 0).sum(dim=(1, 2)),
                        same.sum(dim=(1, 2)).to(cos.dtype)], dim=1)


def update_weights(w: Tensor, stats: Tensor, mu: Tensor, one_minus_mu: Tensor) -> Tensor:
    """Dynamic discriminator weights per member: w (M, 2) from summed stats (M, 4)."""
    c_f = stats[:, 0] / stats[:, 1].clamp(min=1)
    c_e = torch.where(stats[:, 3] > 0, stats[:, 2] / stats[:, 3].clamp(min=1), c_f)
    soft = torch.softmax(-torch.stack([c_f, c_e], dim=1), dim=1)
    return mu[:, None] * w + one_minus_mu[:, None] * soft


class StackedAdam:
    """Adam / AdamW (torch's update rule) on one flat (M, P) leaf, lr and decay per member.

    The state has torch's layout per member (`member_state`), so a member's
    checkpoint can be resumed by the plain trainer with `torch.optim.AdamW`.
    """

    def __init__(self, param: Tensor, lr: list[float], weight_decay: list[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.param = param
        dev = param.device
        # float64 on the device, like torch's Python-float arithmetic, without a host copy per step
        self.lr = torch.tensor(lr, dtype=torch.float64, device=dev)[:, None]  # (M, 1)
        self.decay = torch.tensor([1 - a * b for a, b in zip(lr, weight_decay, strict=True)],
                                  device=dev)[:, None]
        self.betas = betas
        self.eps = eps
        self.step_count = 0
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        beta1, beta2 = self.betas
        self.step_count += 1
        self.param.mul_(self.decay)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = (self.lr / (1 - beta1 ** self.step_count)).to(self.param.dtype)  # (M, 1)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** self.step_count)).add_(self.eps)
        self.param.addcdiv_(self.exp_avg * -step_size, denom)

    def member_state(self, member: int, shapes: list[torch.Size]) -> dict[int, dict[str, Tensor]]:
        """torch.optim state dict `state` entries of one member, per parameter index."""
        sizes = [s.numel() for s in shapes]
        avg = self.exp_avg[member].split(sizes)
        sq = self.exp_avg_sq[member].split(sizes)
        return {k: {"step": torch.tensor(float(self.step_count)),
                    "exp_avg": a.reshape(shape).clone(), "exp_avg_sq": q.reshape(shape).clone()}
                for k, (a, q, shape) in enumerate(zip(avg, sq, shapes, strict=True))}
