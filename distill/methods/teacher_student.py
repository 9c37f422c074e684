"""The shared base of the methods with a separately built teacher (kd, crd, crcd).

The teacher t = H_T([E_S' ; E_A]) sees every modality and shares nothing with the student
(own encoders, own classifier: `base.build_teacher`). With a `fixed_teacher` option (kd) it
trains online beside the student unless the option is set; without one (crd, crcd) it is
always CE-trained first, or loaded, then frozen (`base.TeacherPhase`). A subclass gives only
its distillation terms (`distill_losses`, named in `distill_terms`: `Method.losses` adds both
cross-entropies) and their weights (`distill_weights`); the base adds the phases:

    weights = {cls_teacher: 1} while the fixed teacher pre-trains, else
              the method's weights (+ cls_teacher: 1 for an online teacher)
"""

from __future__ import annotations

from amid.distill.methods.base import (
    Method,
    MethodContext,
    TeacherPhase,
    Weight,
    build_student,
    build_teacher,
    forward_with_teacher,
)


class SeparateTeacherMethod(Method):
    """Student + separate full-modality teacher (subclasses: see the module docstring)."""

    has_teacher = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.student = build_student(ctx)
        self.teacher = build_teacher(ctx)
        fixed = getattr(ctx.opts, "fixed_teacher", True)
        self.phase = TeacherPhase(self, self.teacher, ctx.opts) if fixed else None

    forward = forward_with_teacher

    def distill_weights(self, epoch: int) -> dict[str, Weight]:
        """The student's weights while distilling (cls_student and the method's terms)."""
        raise NotImplementedError

    def weights(self, epoch: int) -> dict[str, Weight]:
        if not self.distilling(epoch):  # fixed teacher, pre-training: its CE only
            return {"cls_teacher": 1.0}
        w = self.distill_weights(epoch)
        # online, the teacher keeps learning from its labels; a frozen teacher's CE stays
        # in the log (no gradient) but not in the total
        return w | {"cls_teacher": 1.0} if self.phase is None else w
