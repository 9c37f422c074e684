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

The authors backpropagate them separately into two optimisers: the student
gets the gradient of the student objective only (never of the teacher's CE
or NCE2(t, a)), while the composition accumulates both. Here one weighted
sum gives exactly those gradients: the teacher objective's terms are
computed on a second composition of `s.detach()` (`t_sg`), so they reach the
composition and E_A but not the student. Pair terms use the samples with
every auxiliary modality; the teacher CE is masked the same way.

Differences from the authors' code, and why:

- The auxiliary features are not fixed pre-extracted embeddings fed
  straight in: the cached features pass through a trained encoder E_A (they
  are not in the common d-dimensional space). E_A belongs to the teacher
  side and trains with the composition, on the sum of both objectives.
- One optimiser (train.lr) instead of two SGD optimisers of equal rate; the
  gradients each part receives are the authors' (see above).
- `nce_weight` and `kl_weight` scale the student's terms, as the authors'
  `--loss_weight` does in their audio+image variant (their audio-only
  variant uses 1, the default here). No 1e-10 inside the logs (the NCE's
  log(1 - h) and the KL are computed exactly); an anchor whose class fills
  the batch has no negative sum (the authors' code divides 0 by 0 there).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amid.distill.data import Batch
from amid.distill.losses.kl import symmetric_kl_loss
from amid.distill.losses.mi import class_aware_mi_loss
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    Weight,
    build_student,
    ce_terms,
    needs_auxiliary,
    teacher_pairs,
)
from amid.distill.models import Teacher, build_encoder
from amid.schema import Schema, option


class ComposedTeacher(Teacher):
    """t = a + head([a/|a| ; s/|s|]); `head` a Linear 2d -> d, `classifier` its own g_t."""

    def compose(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return a + self.head(torch.cat([F.normalize(a, dim=1), F.normalize(s, dim=1)], dim=1))


def nce2(x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """The authors' symmetric pair term: NCELoss(x, y) + NCELoss(y, x), not halved."""
    return (class_aware_mi_loss(x, y, labels, tau, "ccl")
            + class_aware_mi_loss(y, x, labels, tau, "ccl"))


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

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        needs_auxiliary(ctx)
        m = ctx.model
        self.student = build_student(ctx)
        a_enc = build_encoder(ctx.data.auxiliary, m.auxiliary, m, clip_mlp=True)
        self.teacher = ComposedTeacher(self.student.encoder, a_enc, nn.Linear(2 * m.dim, m.dim),
                                       nn.Linear(m.dim, ctx.num_classes))

    def forward(self, batch: Batch) -> Outputs:
        s, logits_s = self.student(batch.target)  # (B, d), (B, C)
        tout = self.teacher(batch.target, batch.auxiliary, s)  # a, t (B, d), logits_t (B, C)
        # the teacher objective's composition: same value, no path back into the student
        t_sg = self.teacher.compose(tout["a"], s.detach())
        return {"s": s, "logits_s": logits_s, **tout, "t_sg": t_sg,
                "logits_t_sg": self.teacher.classifier(t_sg)}

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        zero = out["s"].new_zeros(())
        terms = ce_terms(batch, out, "logits_t_sg") | {
            "nce_student": zero, "kl_student": zero, "nce_teacher": zero, "kl_teacher": zero,
            "nce_st": zero, "nce_sa": zero, "nce_ta": zero,  # the NCE2 parts, logged only
        }
        pairs = teacher_pairs(batch, out)
        if pairs is None:
            return terms
        p, y = pairs
        tau = self.opts.temperature
        s_sg = p["s"].detach()
        terms["nce_st"] = nce2(p["s"], p["t"], y, tau)
        terms["nce_sa"] = nce2(p["s"], p["a"], y, tau)
        terms["nce_ta"] = nce2(p["t_sg"], p["a"], y, tau)
        terms["nce_student"] = terms["nce_st"] + terms["nce_sa"]
        terms["kl_student"] = symmetric_kl_loss(p["logits_s"], p["logits_t"])
        terms["nce_teacher"] = nce2(s_sg, p["t_sg"], y, tau) + terms["nce_ta"]
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
