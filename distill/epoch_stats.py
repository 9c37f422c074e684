"""What the training loop counts over an epoch, on the device (one host sync per epoch),
and which loss term pushes the student encoder, how hard (`term_gradients`)."""

from __future__ import annotations

import torch


class EpochSums:
    """Each term's sum over an epoch's batches and its first non-finite batch, per member:
    (M, K) on the device, grown when terms appear mid-epoch (the discriminators start)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.sums: torch.Tensor | None = None  # (M, K)
        self.bad: torch.Tensor | None = None  # (M, K) first bad batch, -1: none

    def add(self, terms: dict[str, torch.Tensor], batch: int) -> None:
        if list(terms) != self.keys:
            keys = self.keys + [k for k in terms if k not in self.keys]
            like = next(iter(terms.values()))
            grown = like.new_zeros(like.shape[0], len(keys), dtype=torch.float32)
            bad = torch.full_like(grown, -1, dtype=torch.long)
            if self.sums is not None:
                grown[:, :len(self.keys)], bad[:, :len(self.keys)] = self.sums, self.bad
            self.keys, self.sums, self.bad = keys, grown, bad
        vec = torch.stack([terms[k].detach().float() for k in self.keys], dim=1)  # (M, K)
        self.sums += vec
        self.bad = torch.where(~torch.isfinite(vec) & (self.bad < 0), batch, self.bad)

    def means(self, n_batches: int) -> dict[str, torch.Tensor]:
        return {k: self.sums[:, i] / n_batches for i, k in enumerate(self.keys)}

    def first_bad(self) -> dict[str, list[int]]:
        return dict(zip(self.keys, self.bad.T.tolist(), strict=True))


class TrainingHits:
    """Training accuracy of student and teacher, counted on the batches as they trained
    (train mode, weights moving through the epoch): an overfitting signal at no cost,
    where scoring the whole training split again each epoch would cost a forward pass."""

    def __init__(self) -> None:
        self.right: dict[str, torch.Tensor] = {}
        self.seen: dict[str, torch.Tensor] = {}

    def add(self, labels: torch.Tensor, present: torch.Tensor,
            out: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for role, key, keep in (("student", "logits_s", None),
                                    ("teacher", "logits_t", present)):
                if key not in out:
                    continue
                hit = (out[key].argmax(dim=-1) == labels).float()  # (M, B)
                weight = torch.ones_like(hit) if keep is None else keep.float()
                self.right[role] = self.right.get(role, 0) + (hit * weight).sum(dim=1)
                self.seen[role] = self.seen.get(role, 0) + weight.sum(dim=1)

    def accuracies(self) -> dict[str, torch.Tensor]:
        return {f"train_acc_{role}": self.right[role] / self.seen[role].clamp(min=1)
                for role in self.right}


def term_gradients(parts: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                   s: torch.Tensor) -> dict[str, torch.Tensor]:
    """`grad_<term>`: (M,) norms of each weighted term's gradient w.r.t. the tap s (M, B, d),

        grad_<k> = || d (w_k L_k) / d s ||_F        s: the student encoder's output (B, d)

    the gradient term k sends into the student encoder through every use of s, taken on
    the epoch's first batch at a zero "tap" added to s (`stack.tapped`). A term with
    weight 0 or that does not reach s (the teacher's own CE with separate encoders)
    reports 0. Cost: one extra backward per term through the loss computations only.
    """
    zero = s.new_zeros(s.shape[0])
    out: dict[str, torch.Tensor] = {}
    for k, term in parts.items():
        weighted = (weights[k] * term).sum() if k in weights else None
        if weighted is None or not weighted.requires_grad or not s.requires_grad:
            out[f"grad_{k}"] = zero
            continue
        (g,) = torch.autograd.grad(weighted, s, retain_graph=True, allow_unused=True)
        out[f"grad_{k}"] = zero if g is None else g.flatten(1).norm(dim=1)  # (M,)
    return out
