"""The AMID family (DESIGN 4.1-4.5): `ts`, `ts_ta` and `amid`, with the ablation switches.

    ts    : L_cls + jsd * L_JSD + alpha * L_TS
    ts_ta : ts + beta * L_TA
    amid  : ts_ta + gamma * L_adv, discriminators trained on L_D (own optimiser)

Switches (LossConfig): `mi_variant` (amid | ccl), `warmup_epochs` (L_adv and
L_D off for the first E_w distillation epochs), `enhanced_disc` (D_e on/off),
`dynamic_weights` (w_f, w_e moving average, else fixed 0.5/0.5),
`fixed_teacher` (the teacher gets its own encoders, is CE-trained for
`teacher_epochs` or loaded from `teacher_run`, then frozen: requires_grad
False and eval mode; the shared classifier g is part of it and freezes too).

Samples missing an auxiliary modality train the student's CE only: the
teacher CE is masked, and the pair terms (MI, JSD, adversarial) use the rows
with every auxiliary modality (`batch.teacher_rows`; None means all rows).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from amid.distill.data import Batch
from amid.distill.losses.adversarial import (
    adversarial_loss,
    alignment_means,
    alignment_stats,
    discriminator_loss,
    update_dynamic_weights,
)
from amid.distill.losses.jsd import jsd_loss
from amid.distill.losses.mi import symmetric_mi_loss
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    build_student,
    build_teacher,
    masked_ce,
)
from amid.distill.models import discriminator


@METHODS.register("ts")
class TS(Method):
    """Online distillation with the class-aware MI bound between teacher and student."""

    has_teacher = True
    use_ta = False
    use_adv = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        lc = ctx.loss
        self.student = build_student(ctx)
        separate = ctx.model.teacher_encoders == "separate" or lc.fixed_teacher
        self.teacher = build_teacher(ctx, self.student, separate)
        # epochs spent pre-training a fixed teacher; distillation starts after them
        self.pretrain = lc.teacher_epochs if lc.fixed_teacher and not lc.teacher_run else 0
        if lc.fixed_teacher and lc.teacher_run:
            from amid.distill.inference import load_weights

            load_weights(self.teacher, Path(lc.teacher_run) / "teacher.safetensors")
            self.freeze(self.teacher)
        if self.use_adv:
            hidden = ctx.model.disc_hidden
            self.discriminators = nn.ModuleDict({"f": discriminator(ctx.model.dim, hidden, 5)})
            if lc.enhanced_disc:
                self.discriminators["e"] = discriminator(ctx.model.dim, hidden, 3)
        self.register_buffer("w", torch.tensor([0.5, 0.5]))  # (w_f, w_e)
        self.register_buffer("align", torch.zeros(4))  # this epoch's alignment_stats sums

    # ------------------------------------------------------------ phases
    def distilling(self, epoch: int) -> bool:
        return epoch >= self.pretrain

    def adversarial(self, epoch: int) -> bool:
        return self.use_adv and epoch >= self.pretrain + self.ctx.loss.warmup_epochs

    def begin_epoch(self, epoch: int) -> None:
        if self.ctx.loss.fixed_teacher and self.distilling(epoch):
            self.freeze(self.teacher)
        self.align.zero_()

    # ------------------------------------------------------------ contract
    def forward(self, batch: Batch) -> Outputs:
        s, logits_s = self.student(batch.target)  # (B, d), (B, C)
        shared = self.teacher.student_encoder is self.student.encoder
        tout = self.teacher(batch.target, batch.auxiliary, s if shared else None)
        return {"s": s, "logits_s": logits_s, **tout}  # + a, t (B, d), logits_t (B, C)

    def _pairs(self, batch: Batch, out: Outputs) -> tuple[Outputs, torch.Tensor] | None:
        """Teacher-side rows (every auxiliary modality present), or None if fewer than 2."""
        rows = batch.teacher_rows
        if rows is None:
            return out, batch.labels
        if rows.numel() < 2:  # rows came from nonzero(): its size is known on the host
            return None
        return {k: v[rows] for k, v in out.items()}, batch.labels[rows]

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        lc = self.ctx.loss
        zero = out["s"].new_zeros(())
        ce_t = masked_ce(out["logits_t"], batch.labels, batch.aux_present)
        terms = {"cls_student": zero, "cls_teacher": ce_t, "jsd": zero, "ts": zero}
        if self.use_ta:
            terms["ta"] = zero
        if self.use_adv:
            terms |= {"adv_f": zero, "adv_e": zero, "adv": zero}
        if not self.distilling(epoch):  # fixed teacher, pre-training: teacher CE only
            return {**terms, "total": ce_t}
        terms["cls_student"] = F.cross_entropy(out["logits_s"], batch.labels)
        # a frozen teacher's CE has no gradient: leave it out of the total
        total = terms["cls_student"] + ce_t if self.teacher.training else terms["cls_student"]
        pairs = self._pairs(batch, out)
        if pairs is None:
            return {**terms, "total": total}
        p, y = pairs
        terms["jsd"] = jsd_loss(p["logits_t"], p["logits_s"])
        terms["ts"] = symmetric_mi_loss(p["t"], p["s"], y, lc.tau, lc.mi_variant)
        total = total + lc.jsd * terms["jsd"] + lc.alpha * terms["ts"]
        if self.use_ta:
            terms["ta"] = symmetric_mi_loss(p["t"], p["a"], y, lc.tau, lc.mi_variant)
            total = total + lc.beta * terms["ta"]
        if self.adversarial(epoch):
            d = self.discriminators
            adv = adversarial_loss(d["f"], getattr(d, "e", None), p["s"], y,
                                   self.w[0], self.w[1], lc.enhanced_disc)
            terms |= {"adv_f": adv["adv_f"], "adv_e": adv["adv_e"], "adv": adv["total"]}
            total = total + lc.gamma * adv["total"]
            self.align += alignment_stats(p["t"], p["s"], y)
        return {**terms, "total": total}

    def discriminator_losses(self, batch: Batch, out: Outputs,
                             epoch: int) -> dict[str, torch.Tensor] | None:
        if not self.adversarial(epoch):
            return None
        pairs = self._pairs(batch, out)
        if pairs is None:
            return None
        p, y = pairs
        d = self.discriminators
        return discriminator_loss(d["f"], getattr(d, "e", None), p["t"], p["s"], y,
                                  self.ctx.loss.enhanced_disc)

    def end_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        if not self.use_adv:
            return {}
        lc = self.ctx.loss
        if self.adversarial(epoch) and lc.dynamic_weights:
            c_f, c_e = alignment_means(self.align)
            self.w.copy_(update_dynamic_weights(self.w, c_f, c_e, lc.mu).to(self.w))
        return {"w_f": self.w[0].clone(), "w_e": self.w[1].clone()}

    def exports(self) -> dict:
        found = super().exports()
        if self.discriminators is not None:
            found["discriminators"] = (self.discriminators, {
                "dim": self.ctx.model.dim, "hidden": self.ctx.model.disc_hidden,
                "layers": {"f": 5, "e": 3}, "enhanced": self.ctx.loss.enhanced_disc})
        return found


@METHODS.register("ts_ta")
class TSTA(TS):
    """ts + beta * L_TA: the teacher must also keep the auxiliary information."""

    use_ta = True


@METHODS.register("amid")
class AMID(TS):
    """The full method: ts_ta + gamma * L_adv with the fundamental and enhanced discriminators."""

    use_ta = True
    use_adv = True
