"""Relation contrastive distillation, after CRCD (Zhu et al., "Complementary
Relation Contrastive Distillation", CVPR 2021, Eq. 3-8).

Follows the authors' public code, Lechatelia/CRCD ``crcd/memory.py``
(``ContrastMemory.forward``, the student-side term ``out_v1``) and ``crcd/criterion.py``.
CRCD distils the teacher's inter-sample *relations*: each relation is anchored on a TEACHER
representation. With z = the L2-normalised representations (student and teacher in the same
d: project before calling), for a teacher anchor a, a sample j and a candidate k::

    r^s_aj = normalize(z^t_a - z^s_j)        student relation to the anchor
    r^t_ak = normalize(z^t_a - z^t_k)        teacher relation to the anchor

    loss = mean_{a, j != a} -log( exp(<r^s_aj, r^t_aj> / tau)
                                  / sum_{k != a} exp(<r^s_aj, r^t_ak> / tau) )

(the authors write ``s_j - t_a`` and ``t_k - t_a``; flipping both signs leaves every dot
product unchanged). Anchors a are the first ``max_anchors`` rows (the batch is shuffled).
Shapes: f_s, f_t (N, d) -> scalar; memory (M, N, N) logits for M anchors.

Differences from the authors' code, and why:

- Candidates k are the other samples of the batch (N - 1 of them), not the sample plus
  ``nce_k`` = 500 negatives drawn from a memory bank: the authors' tensor is (B, B, K+1, f),
  1 GiB at B = 64, K = 500, f = 128 per step, beyond this project's CPU budget; the batch
  gives the relations of current, not momentum-averaged, features.
- Anchors are the teacher's current representations, not its memory-bank
  rows: the teacher is frozen here and has no embedding head, so its bank
  rows would converge to exactly these.
- The pairs j = a and candidates k = a are left out: the teacher relation
  ``t_a - t_a`` is the zero vector (the authors add 1e-6 and normalise it
  into a constant direction), so such rows carry no relation.
- The softmax cross-entropy over the candidates replaces NCE with its
  normaliser Z estimated on the first batch; this is the "loss new" the
  authors leave in ``ContrastLoss.forward`` (commented out, with the remark
  that the contrastive loss is not critical), and it needs no Z.
- Only the student-side term: the authors' teacher-side term (student
  anchors from the bank, ``out_v2``) sends gradient only to the teacher's
  embedding head, which a frozen teacher without a head does not have (the
  authors' ``nofc`` setting omits it likewise). No gradient relations
  (``helper/loops.py``), no 1e-6 offset (F.normalize guards a zero vector).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amid.distill.losses.checks import check_temperature


def crcd_loss(f_s: torch.Tensor, f_t: torch.Tensor, temperature: float = 0.05,
              max_anchors: int | None = 64) -> torch.Tensor:
    """Teacher-anchored relation InfoNCE, student vs teacher: (N, d) x (N, d) -> scalar."""
    if f_s.dim() != 2 or f_s.shape != f_t.shape:
        raise ValueError("crcd_loss needs student and teacher representations of the same shape "
                         f"(N, d), got {tuple(f_s.shape)} and {tuple(f_t.shape)}; project them "
                         "to a common d first")
    check_temperature(temperature)
    if max_anchors is not None and max_anchors < 1:
        raise ValueError(f"max_anchors must be >= 1 or None, got {max_anchors}")
    n = f_s.shape[0]
    if n < 2:
        # no pair, no relation: a zero that still belongs to the graph
        return f_s.sum() * 0.0
    m = n if max_anchors is None else min(n, max_anchors)
    z_s, z_t = F.normalize(f_s, dim=1), F.normalize(f_t, dim=1)
    # Every relation, j = a and k = a included, then those masked: a gather of the
    # N - 1 others (z_s[others]) would backpropagate through a scatter-add, whose
    # accumulation order follows the threads, so two identical runs would differ.
    # Broadcasting backpropagates through plain sums, in a fixed order.
    anchor = z_t[:m, None, :]  # (M, 1, d): the teacher anchors
    r_s = F.normalize(anchor - z_s[None], dim=2)  # (M, N, d)
    r_t = F.normalize(anchor - z_t[None], dim=2)  # (M, N, d); row k = a is 0
    logits = torch.einsum("mjd,mkd->mjk", r_s, r_t) / temperature  # (M, N, N)
    rows = torch.arange(n, device=f_s.device)
    is_anchor = torch.arange(m, device=f_s.device)[:, None] == rows[None, :]  # (M, N)
    logits = logits.masked_fill(is_anchor[:, None, :], float("-inf"))  # k = a: no candidate
    per = F.cross_entropy(logits.reshape(m * n, n), rows.repeat(m), reduction="none")
    # j = a: no relation (its target is the masked k = a: +inf, dropped, no gradient)
    return per.reshape(m, n).masked_fill(is_anchor, 0.0).sum() / (m * (n - 1))
