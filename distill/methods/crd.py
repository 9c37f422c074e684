"""`crd`: Contrastive Representation Distillation (Tian et al., ICLR 2020), DESIGN 4.5.

A full-modality teacher t = H_T([E_S' ; E_A]) with its own encoders and its
own classifier is CE-trained for the first `loss.teacher_epochs` epochs of the
run (or loaded from `loss.teacher_run`, a `teacher` run folder), then frozen
(requires_grad False, eval mode). The student then trains on

    CE(g(s), y) + crd_weight * (L_crd(s -> teacher bank) + L_crd(t -> student bank))

with linear 128-d L2-normalised embedding heads, memory banks of momentum 0.5
over the training samples and temperature 0.07 (`amid.distill.losses.CRDLoss`).

Simplified relative to the paper: CRDLoss's softmax-over-(K+1) form replaces
NCE with its estimated normaliser (see that module); the student trains only
after the teacher's pre-training epochs (as AMID's `fixed_teacher` switch
does), so within one run it gets `epochs - teacher_epochs` epochs; the banks
cover the training samples with every auxiliary modality, and at most
`train size - 1` negatives are drawn per anchor.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from amid.distill.data import Batch
from amid.distill.losses.crd import CRDLoss
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    build_student,
    masked_ce,
)
from amid.distill.models import Teacher, build_encoder, teacher_head
from amid.errors import ConfigError


def build_fixed_teacher(ctx: MethodContext) -> Teacher:
    """A teacher sharing nothing with the student: own E_S copy, E_A, H_T and classifier."""
    if not ctx.data.auxiliary:
        raise ConfigError("this method needs auxiliary modalities (dataset.auxiliary is empty)")
    m = ctx.model
    s_enc = build_encoder(ctx.data.target, m.student, m)
    a_enc = build_encoder(ctx.data.auxiliary, m.auxiliary, m, clip_mlp=True)
    return Teacher(s_enc, a_enc, teacher_head(m.dim, m.hidden, m.dropout),
                   nn.Linear(m.dim, ctx.num_classes))


class FixedTeacherMethod(Method):
    """Shared by `crd` and `crcd`: teacher pre-training phase, then a frozen teacher.

    Subclasses implement `distill_terms` (the extra terms, their weighted sum
    under "distill") and list their keys in `term_keys`.
    """

    has_teacher = True
    term_keys: tuple[str, ...] = ()
    name = ""

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        lc = ctx.loss
        self.student = build_student(ctx)
        self.teacher = build_fixed_teacher(ctx)
        self.pretrain = 0 if lc.teacher_run else lc.teacher_epochs
        if lc.teacher_run:
            from amid.distill.inference import load_weights

            load_weights(self.teacher, Path(lc.teacher_run) / "teacher.safetensors")
            self.freeze(self.teacher)
        elif not 1 <= self.pretrain < ctx.epochs:
            raise ConfigError(
                f"{self.name} distils from a pre-trained teacher: train.loss.teacher_epochs "
                f"(now {self.pretrain}) must be >= 1 and below train.epochs ({ctx.epochs}), "
                "or train.loss.teacher_run must name a `teacher` run folder"
            )

    def distilling(self, epoch: int) -> bool:
        return epoch >= self.pretrain

    def begin_epoch(self, epoch: int) -> None:
        if self.distilling(epoch):
            self.freeze(self.teacher)

    def forward(self, batch: Batch) -> Outputs:
        s, logits_s = self.student(batch.target)  # (B, d), (B, C)
        frozen = not any(p.requires_grad for p in self.teacher.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            tout = self.teacher(batch.target, batch.auxiliary)  # a, t (B, d), logits_t (B, C)
        return {"s": s, "logits_s": logits_s, **tout}

    def distill_terms(self, batch: Batch, out: Outputs,
                      rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        zero = out["s"].new_zeros(())
        ce_t = masked_ce(out["logits_t"], batch.labels, batch.aux_present)
        terms = {"cls_student": zero, "cls_teacher": ce_t, **dict.fromkeys(self.term_keys, zero)}
        if not self.distilling(epoch):  # teacher pre-training: its CE only
            return {**terms, "total": ce_t}
        # the frozen teacher's CE stays in the log (no gradient) but not in the total
        terms["cls_student"] = F.cross_entropy(out["logits_s"], batch.labels)
        total = terms["cls_student"]
        rows = batch.teacher_rows
        if rows is not None and rows.numel() < 2:  # nonzero() result: size known on the host
            return {**terms, "total": total}
        extra = self.distill_terms(batch, out, rows)
        terms |= {k: v for k, v in extra.items() if k != "distill"}
        return {**terms, "total": total + extra["distill"]}


@METHODS.register("crd")
class CRD(FixedTeacherMethod):
    """CRD from a fixed full-modality teacher (see the module docstring)."""

    FEAT_DIM = 128
    TEMPERATURE = 0.07
    MOMENTUM = 0.5
    term_keys = ("crd_s", "crd_t", "crd")
    name = "crd"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        data = ctx.data
        train = data.splits["train"]
        bank_rows = train[data.aux_present[train]]  # (n,) rows that have teacher features
        if bank_rows.numel() < 2:
            raise ConfigError("crd needs at least 2 training samples with every auxiliary "
                              "modality (its memory banks hold only those)")
        # TrainData row -> memory-bank row (-1: not in the bank, never a CRD anchor)
        slot = torch.full((len(data),), -1, dtype=torch.long, device=bank_rows.device)
        slot[bank_rows] = torch.arange(bank_rows.numel(), device=bank_rows.device)
        self.register_buffer("bank_slot", slot, persistent=False)
        n = int(bank_rows.numel())
        self.crd = CRDLoss(ctx.model.dim, ctx.model.dim, n, self.FEAT_DIM,
                           min(ctx.loss.crd_negatives, n - 1), self.TEMPERATURE, self.MOMENTUM)

    def distill_terms(self, batch: Batch, out: Outputs,
                      rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        s, t, index = out["s"], out["t"], batch.index
        if rows is not None:
            s, t, index = s[rows], t[rows], index[rows]
        # training batches come from the train split, so every slot here is >= 0
        got = self.crd(s, t.detach(), self.bank_slot[index])
        return {"crd_s": got["crd_s"], "crd_t": got["crd_t"], "crd": got["total"],
                "distill": self.ctx.loss.crd_weight * got["total"]}
