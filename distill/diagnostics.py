"""Per-term gradient norms: which loss term pushes the student encoder, and how hard.

For every named term L_k of a method, with its weight w_k in the total, the
trainer logs per epoch, on the epoch's first (randomly drawn) batch,

    grad_<k> = || d (w_k L_k) / d s ||_F        s: the student encoder's output (B, d)

i.e. the gradient that term sends into the student encoder through every
use of s (classifier, teacher head, the term itself); the encoder's
parameters receive exactly this signal, back-propagated. It is taken at a
zero "tap" added to s for that forward only (`stack.tapped`), which sees
every path. A term with weight 0 (logged only) or that does not reach s (the
teacher's own CE with separate encoders) reports 0. Comparing them across epochs shows, from the
run folder alone, which term dominates the student's updates (see
docs/results.md for L_TS at a small temperature).

Cost: one extra backward pass per term through the loss computations only
(not through the encoders), once per epoch.
"""

from __future__ import annotations

import torch


def term_gradients(parts: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                   s: torch.Tensor) -> dict[str, torch.Tensor]:
    """`grad_<term>`: (M,) norms of each weighted term's gradient w.r.t. the tap s (M, B, d)."""
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
