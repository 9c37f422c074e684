"""`crcd`: relation contrastive distillation (Zhu et al., CVPR 2021), docs/method.md.

Same fixed teacher as `crd` (`base.TeacherPhase`). The student then trains on

    CE(g(s), y) + weight * crcd_loss(P(s), t)

where P is a linear head d -> d on the student side (the authors' `Embed`,
"linear" type, here to d rather than 128) and `crcd_loss` (its relations:
`amid.distill.losses.crcd`) runs at the authors' temperature 0.05 (`nce_t` in
Lechatelia/CRCD `train_student.py`) with their loss weight 1 (`-b`).

Differences from the authors' code: those of the loss (`amid.distill.losses.crcd`), and
their advice to drop the distillation weight to 0 for the last epochs (their README) is not
taken over: a schedule tied to their 250-epoch CIFAR runs. As in `crd`, the student trains
after the teacher's epochs.
"""

from __future__ import annotations

import torch
from torch import nn

from amid.distill.losses.crcd import crcd_loss
from amid.distill.methods.base import METHODS, FixedTeacherOptions, MethodContext, Outputs, Weight
from amid.distill.methods.teacher_student import SeparateTeacherMethod
from amid.schema import option


class CRCDOptions(FixedTeacherOptions):
    """`methods.crcd`."""

    weight: float = option(1.0, ge=0, per_member=True)  # relation term
    temperature: float = option(0.05, gt=0)  # the authors' nce_t
    max_anchors: int = option(64, ge=1)  # bounds the (M, N-1, N-1) logits


@METHODS.register("crcd")
class CRCD(SeparateTeacherMethod):
    """Relation contrastive distillation from a fixed full-modality teacher."""

    Options = CRCDOptions
    distill_terms = ("crcd",)

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.embed_s = nn.Linear(ctx.model.dim, ctx.model.dim)

    def distill_losses(self, pairs: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        o = self.opts
        return {"crcd": crcd_loss(self.embed_s(pairs["s"]), pairs["t"].detach(),
                                  o.temperature, o.max_anchors)}

    def distill_weights(self, epoch: int) -> dict[str, Weight]:
        return {"cls_student": 1.0, "crcd": self.opts.weight}
