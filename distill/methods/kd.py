"""`kd`: plain knowledge distillation from a full-modality teacher (the simplest rung).

The teacher t = H_T([E_S' ; E_A]) sees every modality and shares nothing
with the student (own encoders, own classifier). It trains with its own CE,
either jointly with the student (online, the default) or first and then
frozen (`fixed_teacher`: `base.TeacherPhase`, generalised distillation as
Lopez-Paz et al. 2016 state it). The student trains on

    (1 - weight) * CE(g(s), y) + weight * T^2 KL(softmax(g_t(t)/T) || softmax(g(s)/T))

(`amid.distill.losses.kd`), the teacher's soft targets detached: they are
targets, not something the student may move. If this cannot lift the
student in a regime, no method here should be expected to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from amid.distill.data import Batch
from amid.distill.losses.kd import kd_loss
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    TeacherPhase,
    TeacherPhaseOptions,
    Weight,
    build_separate_teacher,
    build_student,
    forward_with_separate_teacher,
    masked_ce,
    teacher_pairs,
)
from amid.typed import above, option


@dataclass
class KDOptions(TeacherPhaseOptions):
    """`methods.kd`: Hinton et al.'s temperature T and weight lambda."""

    # T, lambda and the online teacher: docs/results.md's rule A, on validation data
    temperature: float = option(2.0, check=above(0), per_member=True)  # T
    weight: float = option(0.5, check=(lambda v: 0 <= v <= 1, "in [0, 1]"),
                           per_member=True)  # lambda: 0 is the baseline, 1 soft targets only


@METHODS.register("kd")
class KD(Method):
    """Student CE blended with the full-modality teacher's softened predictions."""

    Options = KDOptions
    has_teacher = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.student = build_student(ctx)
        self.teacher = build_separate_teacher(ctx)
        self.phase = TeacherPhase(self, self.teacher, ctx.opts) if ctx.opts.fixed_teacher \
            else None

    def distilling(self, epoch: int) -> bool:
        return self.phase is None or self.phase.distilling(epoch)

    def begin_epoch(self, epoch: int) -> None:
        if self.phase is not None:
            self.phase.begin_epoch(epoch)

    def forward(self, batch: Batch) -> Outputs:
        return forward_with_separate_teacher(self, batch)

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        terms = {"cls_student": F.cross_entropy(out["logits_s"], batch.labels),
                 "cls_teacher": masked_ce(out["logits_t"], batch.labels, batch.aux_present),
                 "kd": out["s"].new_zeros(())}
        pairs = teacher_pairs(batch, out)
        if pairs is not None and self.distilling(epoch):
            p, _ = pairs
            terms["kd"] = kd_loss(p["logits_s"], p["logits_t"].detach(), self.opts.temperature)
        return terms

    def weights(self, epoch: int) -> dict[str, Weight]:
        if not self.distilling(epoch):  # fixed teacher, pre-training: teacher CE only
            return {"cls_teacher": 1.0}
        lam = self.opts.weight
        w: dict[str, Weight] = {"cls_student": 1.0 - lam, "kd": lam}
        if self.phase is None:  # online: the teacher keeps learning from its labels
            w["cls_teacher"] = 1.0
        return w
