"""The two references of every table: `baseline` (student alone) and `teacher` (teacher alone)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from amid.distill.data import Batch
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    Weight,
    build_student,
    build_teacher,
    forward_with_teacher,
    masked_ce,
)


@METHODS.register("baseline")
class Baseline(Method):
    """E_S and g trained with CE on the target modalities only."""

    uses_auxiliary = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.student = build_student(ctx)

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        return {"cls_student": F.cross_entropy(out["logits_s"], batch.labels)}

    def weights(self, epoch: int) -> dict[str, Weight]:
        return {"cls_student": 1.0}


@METHODS.register("teacher")
class TeacherAlone(Method):
    """The full-modality teacher H_T([E_S ; E_A]) and g trained with CE, no distillation.
    Samples missing an auxiliary modality do not count. E_S + g fall out of the teacher's
    training and are saved as `student`, but they were never trained on the target alone:
    evaluation does not report them."""

    has_teacher = True
    student_trained = False  # student.json says so: amid-predict and export refuse it

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.student = build_student(ctx)
        self.teacher = build_teacher(ctx, self.student)

    forward = forward_with_teacher

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        return {"cls_teacher": masked_ce(out["logits_t"], batch.labels, batch.aux_present)}

    def weights(self, epoch: int) -> dict[str, Weight]:
        return {"cls_teacher": 1.0}
