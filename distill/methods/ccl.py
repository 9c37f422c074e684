"""`ccl`: compositional contrastive learning (Chen et al., CVPR 2021), docs/method.md.

The student E_S gives s, the auxiliary network E_A gives a, and the composed
teacher is the residual ``t = a + MLP([a ; s])`` (MLP: the 2-layer H_T shape).
One classifier g serves s and t, as in AMID. All parts train together:

    CE(g(s), y) + CE(g(t), y)
      + nce_weight * ( nce(s, t) + nce(s, a) )
      + kl_weight * symKL(g(s), g(t))            (kl_weight 0.5 by default)

where nce is the class-aware NCE in its CCL form (docs/method.md, `variant="ccl"`)
at temperature 0.5, symmetrised ((x -> y) + (y -> x)) / 2, and symKL the symmetric KL
of the softmax predictions (T = 1). Pair terms use the samples with every
auxiliary modality; the teacher CE is masked the same way.

Simplified relative to the paper: the encoders work on cached features (no
pre-trained audio network fine-tuned end to end), the composition MLP reads
the two embeddings directly in the common d-dimensional space (the paper
first projects each modality), and one shared classifier replaces separate
heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amid.distill.data import Batch
from amid.distill.losses.kl import symmetric_kl_loss
from amid.distill.losses.mi import symmetric_mi_loss
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    Weight,
    build_student,
    masked_ce,
    needs_auxiliary,
    teacher_pairs,
)
from amid.distill.models import Inputs, Teacher, build_encoder, teacher_head
from amid.typed import above, at_least, option


class ComposedTeacher(Teacher):
    """t = a + head([a ; s]); `head` maps 2d -> d. Same parameters as `Teacher`."""

    def forward(self, target: Inputs, auxiliary: Inputs,
                s: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if s is None:
            s = self.student_encoder(target)  # (B, d)
        a = self.aux_encoder(auxiliary)  # (B, d)
        t = a + self.head(torch.cat([a, s], dim=1))  # (B, d)
        return {"a": a, "t": t, "logits_t": self.classifier(t)}


@dataclass
class CCLOptions:
    """`methods.ccl`."""

    nce_weight: float = option(1.0, check=at_least(0), per_member=True)  # (s, t) and (s, a)
    kl_weight: float = option(0.5, check=at_least(0), per_member=True)  # symmetric KL of logits
    temperature: float = option(0.5, check=above(0))  # of the class-aware NCE


@METHODS.register("ccl")
class CCL(Method):
    """Student, auxiliary network and composed teacher trained jointly (online)."""

    Options = CCLOptions
    has_teacher = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        needs_auxiliary(ctx)
        m = ctx.model
        self.student = build_student(ctx)
        a_enc = build_encoder(ctx.data.auxiliary, m.auxiliary, m, clip_mlp=True)
        self.teacher = ComposedTeacher(self.student.encoder, a_enc,
                                       teacher_head(m.dim, m.hidden, m.dropout),
                                       self.student.classifier)

    def forward(self, batch: Batch) -> Outputs:
        s, logits_s = self.student(batch.target)  # (B, d), (B, C)
        tout = self.teacher(batch.target, batch.auxiliary, s)  # a, t (B, d), logits_t (B, C)
        return {"s": s, "logits_s": logits_s, **tout}

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        zero = out["s"].new_zeros(())
        terms = {
            "cls_student": F.cross_entropy(out["logits_s"], batch.labels),
            "cls_teacher": masked_ce(out["logits_t"], batch.labels, batch.aux_present),
            "nce_st": zero, "nce_sa": zero, "nce": zero, "kl": zero,
        }
        pairs = teacher_pairs(batch, out)
        if pairs is None:
            return terms
        p, y = pairs
        tau = self.opts.temperature
        terms["nce_st"] = symmetric_mi_loss(p["s"], p["t"], y, tau, "ccl")
        terms["nce_sa"] = symmetric_mi_loss(p["s"], p["a"], y, tau, "ccl")
        terms["nce"] = terms["nce_st"] + terms["nce_sa"]
        terms["kl"] = symmetric_kl_loss(p["logits_s"], p["logits_t"])
        return terms

    def weights(self, epoch: int) -> dict[str, Weight]:
        o = self.opts
        return {"cls_student": 1.0, "cls_teacher": 1.0, "nce": o.nce_weight, "kl": o.kl_weight}

    def exports(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        found = super().exports()
        module, arch = found["teacher"]
        # a `Teacher` rebuilt from this JSON alone would compute head([s; a]) instead
        found["teacher"] = (module, {**arch, "composition": "a + head([a; s])"})
        return found
