"""`crcd`: relation contrastive distillation (Zhu et al., CVPR 2021), DESIGN 4.5.

Same fixed teacher as `crd` (CE pre-trained for `loss.teacher_epochs`, or
loaded from `loss.teacher_run`, then frozen). The student then trains on

    CE(g(s), y) + crcd_weight * crcd_loss(P(s), t)

where P is a linear head d -> d on the student side and `crcd_loss`
contrasts each student relation normalize(P(s_i) - P(s_j)) with the frozen
teacher's relations normalize(t_i - t_k) of the same anchor (tau 0.1).

Simplified relative to the paper: relations are normalised feature
differences (no learned relation modules, no gradient relations) contrasted
within the batch instead of against a memory bank (see
`amid.distill.losses.crcd`), and only the student gets an embedding head: the
teacher's relations are used as they are, so its fixed relational structure is
the target. As in `crd`, the student trains after the teacher's epochs.
"""

from __future__ import annotations

import torch
from torch import nn

from amid.distill.data import Batch
from amid.distill.losses.crcd import crcd_loss
from amid.distill.methods.base import METHODS, MethodContext, Outputs
from amid.distill.methods.crd import FixedTeacherMethod


@METHODS.register("crcd")
class CRCD(FixedTeacherMethod):
    """Relation contrastive distillation from a fixed full-modality teacher."""

    TEMPERATURE = 0.1
    MAX_ANCHORS = 64  # bounds the (M, N-1, N-1) logits of one batch
    term_keys = ("crcd",)
    name = "crcd"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.embed_s = nn.Linear(ctx.model.dim, ctx.model.dim)

    def distill_terms(self, batch: Batch, out: Outputs,
                      rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        s, t = out["s"], out["t"]
        if rows is not None:
            s, t = s[rows], t[rows]
        loss = crcd_loss(self.embed_s(s), t.detach(), self.TEMPERATURE, self.MAX_ANCHORS)
        return {"crcd": loss, "distill": self.ctx.loss.crcd_weight * loss}
