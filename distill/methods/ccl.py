"""`ccl`: compositional contrastive learning (Chen et al., CVPR 2021), docs/method.md.

Follows the authors' public code, yanbeic/CCL: `training.py` (`train_a_epoch`,
the audio teacher), `models/composition_classifier.py`, `loss/nce_loss.py`,
`loss/jsd_loss.py` and the settings of `main.py` (NCE temperature 0.5,
composition with normalisation on, JSD weight 0.5).

The student E_S gives s and logits g(s); the auxiliary network E_A gives a.
The composition (the authors' `CompositionClassifier`) is one linear layer
on the L2-normalised pair and its own classifier g_t:

    t = a + W [ a/|a| ; s/|s| ]       (W: 2d -> d)        logits_t = g_t(t)

With nce(x, y) = class-aware NCE (`class_aware_mi_loss`, variant "ccl") and
NCE2(x, y) = nce(x, y) + nce(y, x), SKL = (KL(p||q) + KL(q||p)) / 2 of the
two softmax predictions (`symmetric_kl_loss` at T = 1, the authors'
`JSDLoss(weight=0.5)`), the two objectives of `train_a_epoch` are

    student:  CE(g(s), y) + nce_weight * (NCE2(s, t) + NCE2(s, a)) + kl_weight * SKL
    teacher:  CE(g_t(t), y) + NCE2(s, t) + NCE2(t, a) + SKL

The authors backpropagate them separately into two optimisers: the student gets the gradient
of the student objective only (never of the teacher's CE or NCE2(t, a)), while the
composition accumulates both. Here one weighted sum gives exactly those gradients: the
teacher objective's terms are computed on a second composition of `s.detach()` (`t_sg`), so
they reach the composition and E_A but not the student. Pair terms use the samples with
every auxiliary modality; the teacher CE is masked the same way.

Differences from the authors' code, and why:

- The auxiliary features are not fixed pre-extracted embeddings fed
  straight in: the cached features pass through a trained encoder E_A (they
  are not in the common d-dimensional space). E_A belongs to the teacher
  side and trains with the composition, on the sum of both objectives.
- One optimiser (train.lr) instead of two SGD optimisers of equal rate; the
  gradients each part receives are the authors' (see above).
- `nce_weight` and `kl_weight` scale the student's terms, as the authors' `--loss_weight`
  does in their audio+image variant (their audio-only variant uses 1, the default here). No
  1e-10 inside the logs (the NCE's log(1 - h) and the KL are computed exactly); an anchor
  whose class fills the batch has no negative sum (the authors' code divides 0 by 0 there).
"""

from __future__ import annotations

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
    forward_with_teacher,
    needs_auxiliary,
)
from amid.distill.models import Teacher, build_encoder
from amid.schema import Schema, option


class ComposedTeacher(Teacher):
    """t = a + head([a/|a| ; s/|s|]); `head` a Linear 2d -> d, `classifier` its own g_t."""

    def compose(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return a + self.head(torch.cat([F.normalize(a, dim=1), F.normalize(s, dim=1)], dim=1))


def nce2(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """The authors' symmetric pair term: NCELoss(x, y) + NCELoss(y, x), not halved."""
    return 2 * symmetric_mi_loss(x, y, labels, tau, "ccl")


class CCLOptions(Schema):
    """`methods.ccl` (the authors' settings as defaults)."""

    nce_weight: float = option(1.0, ge=0, per_member=True)  # student's NCE2 terms
    kl_weight: float = option(1.0, ge=0, per_member=True)  # student's SKL
    temperature: float = option(0.5, gt=0)  # of the class-aware NCE


@METHODS.register("ccl")
class CCL(Method):
    """Student, auxiliary network and composition trained together (online)."""

    Options = CCLOptions
    has_teacher = True
    distill_terms = ("nce_student", "kl_student", "nce_teacher", "kl_teacher",
                     "nce_st", "nce_sa", "nce_ta")  # the last three: NCE2's parts, logged only
    teacher_logits = "logits_t_sg"  # the teacher CE: of the teacher objective's composition

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        needs_auxiliary(ctx)
        m = ctx.model
        self.student = build_student(ctx)
        a_enc = build_encoder(ctx.data.auxiliary, m.auxiliary, m, clip_mlp=True)
        self.teacher = ComposedTeacher(self.student.encoder, a_enc, nn.Linear(2 * m.dim, m.dim),
                                       nn.Linear(m.dim, ctx.num_classes))

    def forward(self, batch: Batch) -> Outputs:
        out = forward_with_teacher(self, batch)  # the teacher shares E_S: it reuses s
        # the teacher objective's composition: same value, no path back into the student
        t_sg = self.teacher.compose(out["a"], out["s"].detach())
        return out | {"t_sg": t_sg, "logits_t_sg": self.teacher.classifier(t_sg)}

    def distill_losses(self, p: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        y, tau = p["labels"], self.opts.temperature
        terms = {"nce_st": nce2(p["s"], p["t"], y, tau)}
        terms["nce_sa"] = nce2(p["s"], p["a"], y, tau)
        terms["nce_ta"] = nce2(p["t_sg"], p["a"], y, tau)
        terms["nce_student"] = terms["nce_st"] + terms["nce_sa"]
        terms["kl_student"] = symmetric_kl_loss(p["logits_s"], p["logits_t"])
        terms["nce_teacher"] = nce2(p["s"].detach(), p["t_sg"], y, tau) + terms["nce_ta"]
        terms["kl_teacher"] = symmetric_kl_loss(p["logits_s"].detach(), p["logits_t_sg"])
        return terms

    def weights(self, epoch: int) -> dict[str, Weight]:
        o = self.opts
        return {"cls_student": 1.0, "nce_student": o.nce_weight, "kl_student": o.kl_weight,
                "cls_teacher": 1.0, "nce_teacher": 1.0, "kl_teacher": 1.0}

    def exports(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        found = super().exports()
        module, arch = found["teacher"]
        d = self.ctx.model.dim
        # a `Teacher` rebuilt from this JSON alone would compute an MLP of [s; a] instead
        found["teacher"] = (module, {**arch, "head": {"linear": [2 * d, d]},
                                     "composition": "a + head([a/|a|; s/|s|])"})
        return found
