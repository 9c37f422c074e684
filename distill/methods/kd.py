"""`kd`: plain knowledge distillation from a full-modality teacher (the simplest rung).

The full-modality teacher of `teacher_student` trains with its own CE, jointly
with the student (online, the default) or first and then frozen (`fixed_teacher`,
generalised distillation as Lopez-Paz et al. 2016 state it). The student trains on

    (1 - weight) * CE(g(s), y) + weight * T^2 KL(softmax(g_t(t)/T) || softmax(g(s)/T))

(`amid.distill.losses.kd`), the teacher's soft targets detached: they are
targets, not something the student may move. If this cannot lift the
student in a regime, no method here should be expected to.
"""

from __future__ import annotations

import torch

from amid.distill.losses.kd import kd_loss
from amid.distill.methods.base import METHODS, Outputs, TeacherPhaseOptions, Weight
from amid.distill.methods.teacher_student import SeparateTeacherMethod
from amid.schema import option


class KDOptions(TeacherPhaseOptions):
    """`methods.kd`: Hinton et al.'s temperature T and weight lambda."""

    # T, lambda and the online teacher: docs/results.md's rule A, on validation data
    temperature: float = option(2.0, gt=0, per_member=True)  # T
    # lambda: 0 is the baseline, 1 soft targets only
    weight: float = option(0.5, ge=0, le=1, per_member=True)


@METHODS.register("kd")
class KD(SeparateTeacherMethod):
    """Student CE blended with the full-modality teacher's softened predictions."""

    Options = KDOptions
    distill_terms = ("kd",)

    def distill_losses(self, pairs: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        return {"kd": kd_loss(pairs["logits_s"], pairs["logits_t"].detach(),
                              self.opts.temperature)}

    def distill_weights(self, epoch: int) -> dict[str, Weight]:
        lam = self.opts.weight
        return {"cls_student": 1.0 - lam, "kd": lam}
