"""The shared base of the methods with a separately built teacher (kd, crd, crcd).

The teacher t = H_T([E_S' ; E_A]) sees every modality and shares nothing with the
student (own encoders, own classifier: `base.build_teacher`). With a
`fixed_teacher` option (kd) it trains online beside the student unless the option
is set; without one (crd, crcd) it is always CE-trained first, or loaded, then
frozen (`base.TeacherPhase`). A subclass gives only its distillation terms
(`distill_losses`, named in `distill_terms`) and their weights (`distill_weights`);
the base adds both cross-entropies and the phases:

    terms   = {cls_student, cls_teacher, <the method's terms, 0 until distilling>}
    weights = {cls_teacher: 1} while the fixed teacher pre-trains, else
              the method's weights (+ cls_teacher: 1 for an online teacher)
"""

from __future__ import annotations

from typing import ClassVar

import torch

from amid.distill.data import Batch
from amid.distill.methods.base import (
    Method,
    MethodContext,
    Outputs,
    TeacherPhase,
    Weight,
    build_student,
    build_teacher,
    ce_terms,
    forward_with_teacher,
    teacher_pairs,
)


class SeparateTeacherMethod(Method):
    """Student + separate full-modality teacher (subclasses: see the module docstring)."""

    has_teacher = True
    distill_terms: ClassVar[tuple[str, ...]] = ()  # the method's terms, in log order
    # Batch fields the pair terms need beside the outputs, taken on the same rows
    pair_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.student = build_student(ctx)
        self.teacher = build_teacher(ctx)
        # options without `fixed_teacher` (crd, crcd) always pre-train or load the teacher
        fixed = getattr(ctx.opts, "fixed_teacher", True)
        self.phase = TeacherPhase(self, self.teacher, ctx.opts) if fixed else None

    forward = forward_with_teacher

    def distill_losses(self, pairs: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        """The method's terms on the rows with every auxiliary modality (`pairs`: the
        outputs and `pair_fields` on those rows), while distilling."""
        raise NotImplementedError

    def distill_weights(self, epoch: int) -> dict[str, Weight]:
        """The student's weights while distilling (cls_student and the method's terms)."""
        raise NotImplementedError

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        zero = out["s"].new_zeros(())
        terms = ce_terms(batch, out) | dict.fromkeys(self.distill_terms, zero)
        pairs = teacher_pairs(batch, {**out, **{k: getattr(batch, k) for k in self.pair_fields}})
        if pairs is None or not self.distilling(epoch):
            return terms
        return terms | self.distill_losses(pairs[0], epoch)

    def weights(self, epoch: int) -> dict[str, Weight]:
        if not self.distilling(epoch):  # fixed teacher, pre-training: its CE only
            return {"cls_teacher": 1.0}
        w = self.distill_weights(epoch)
        # online, the teacher keeps learning from its labels; a frozen teacher's CE stays
        # in the log (no gradient) but not in the total
        return w | {"cls_teacher": 1.0} if self.phase is None else w
