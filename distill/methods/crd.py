"""`crd`: Contrastive Representation Distillation (Tian et al., ICLR 2020), docs/method.md.

A full-modality teacher t = H_T([E_S' ; E_A]) with its own encoders and its
own classifier is CE-trained for the first `teacher_epochs` epochs of the run
(or loaded from `teacher_run`, a `teacher` run folder), then frozen
(`base.TeacherPhase`). The student then trains on

    CE(g(s), y) + weight * (L_crd(s -> teacher bank) + L_crd(t -> student bank))

as the authors' HobbitLong/RepDistiller `train_student.py --distill crd`
with its defaults and README command (`-r 1 -a 0 -b 0.8`): linear
`feat_dim`-d L2-normalised embedding heads, memory banks of momentum
`momentum` over the training samples, `negatives` = 16384 negatives per
anchor drawn from the other classes, NCE at temperature 0.07
(`amid.distill.losses.CRDLoss`, which lists its remaining differences).

Differences in the method, and why: the teacher is trained inside the run
(or loaded) rather than taken from a separate pre-training script, so
within one run the student gets `epochs - teacher_epochs` epochs; the
banks cover only the training samples with every auxiliary modality (the
others have no teacher representation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from amid.distill.data import Batch
from amid.distill.losses.crd import CRDLoss
from amid.distill.methods.base import (
    METHODS,
    FixedTeacherOptions,
    Method,
    MethodContext,
    Outputs,
    TeacherPhase,
    Weight,
    build_separate_teacher,
    build_student,
    forward_with_separate_teacher,
    masked_ce,
    teacher_pairs,
)
from amid.errors import ConfigError
from amid.typed import above, at_least, in_unit, option


@dataclass
class CRDOptions(FixedTeacherOptions):
    """`methods.crd` (the defaults of the authors' train_student.py and README)."""

    weight: float = option(0.8, check=at_least(0), per_member=True)  # Tian et al.'s beta
    negatives: int = option(16384, check=at_least(1))  # per anchor (nce_k), other classes only
    temperature: float = option(0.07, check=above(0))
    momentum: float = option(0.5, check=in_unit())  # of the memory banks
    feat_dim: int = option(128, check=at_least(1))  # embedding heads


@METHODS.register("crd")
class CRD(Method):
    """CRD from a fixed full-modality teacher (see the module docstring)."""

    Options = CRDOptions
    has_teacher = True

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        o = ctx.opts
        self.student = build_student(ctx)
        self.teacher = build_separate_teacher(ctx)
        self.phase = TeacherPhase(self, self.teacher, o)
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
        if data.labels[bank_rows].unique().numel() < 2:
            raise ConfigError("crd draws its negatives from other classes: the training "
                              "samples with every auxiliary modality must span 2 classes")
        self.crd = CRDLoss(ctx.model.dim, ctx.model.dim, data.labels[bank_rows], o.feat_dim,
                           o.negatives, o.temperature, o.momentum)

    def begin_epoch(self, epoch: int) -> None:
        self.phase.begin_epoch(epoch)

    def forward(self, batch: Batch) -> Outputs:
        return forward_with_separate_teacher(self, batch)

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        zero = out["s"].new_zeros(())
        terms = {"cls_student": F.cross_entropy(out["logits_s"], batch.labels),
                 "cls_teacher": masked_ce(out["logits_t"], batch.labels, batch.aux_present),
                 "crd_s": zero, "crd_t": zero, "crd": zero}
        pairs = teacher_pairs(batch, {**out, "index": batch.index})
        if pairs is None or not self.phase.distilling(epoch):
            return terms
        p, _ = pairs
        # training batches come from the train split, so every slot here is >= 0
        got = self.crd(p["s"], p["t"].detach(), self.bank_slot[p["index"]])
        return terms | {"crd_s": got["crd_s"], "crd_t": got["crd_t"], "crd": got["total"]}

    def weights(self, epoch: int) -> dict[str, Weight]:
        if not self.phase.distilling(epoch):  # teacher pre-training: its CE only
            return {"cls_teacher": 1.0}
        # the frozen teacher's CE stays in the log (no gradient) but not in the total
        return {"cls_student": 1.0, "crd": self.opts.weight}
