"""`crd`: Contrastive Representation Distillation (Tian et al., ICLR 2020), docs/method.md.

The full-modality teacher of `teacher_student` is CE-trained first (or loaded),
then frozen (`base.TeacherPhase`). The student then trains on

    CE(g(s), y) + weight * (L_crd(s -> teacher bank) + L_crd(t -> student bank))

as the authors' HobbitLong/RepDistiller `train_student.py --distill crd` with its defaults
and README command (`-r 1 -a 0 -b 0.8`); the loss, its embedding heads, memory banks and
negatives, and its differences from their code: `amid.distill.losses.crd`.

Differences in the method, and why: the teacher is trained inside the run (or loaded) rather
than taken from a separate pre-training script, so within one run the student gets
`epochs - teacher_epochs` epochs; the banks cover only the training samples with every
auxiliary modality (the others have no teacher representation).
"""

from __future__ import annotations

import torch

from amid.distill.losses.crd import CRDLoss
from amid.distill.methods.base import METHODS, FixedTeacherOptions, MethodContext, Outputs, Weight
from amid.distill.methods.teacher_student import SeparateTeacherMethod
from amid.errors import ConfigError
from amid.schema import option


class CRDOptions(FixedTeacherOptions):
    """`methods.crd` (the defaults of the authors' train_student.py and README)."""

    weight: float = option(0.8, ge=0, per_member=True)  # Tian et al.'s beta
    negatives: int = option(16384, ge=1)  # per anchor (nce_k), other classes only
    temperature: float = option(0.07, gt=0)
    momentum: float = option(0.5, ge=0, lt=1)  # of the memory banks
    feat_dim: int = option(128, ge=1)  # embedding heads


@METHODS.register("crd")
class CRD(SeparateTeacherMethod):
    """CRD from a fixed full-modality teacher (see the module docstring)."""

    Options = CRDOptions
    distill_terms = ("crd_s", "crd_t", "crd")
    pair_fields = ("index",)  # the bank slot of each anchor

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        o, data = ctx.opts, ctx.data
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

    def distill_losses(self, pairs: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        # training batches come from the train split, so every slot here is >= 0
        got = self.crd(pairs["s"], pairs["t"].detach(), self.bank_slot[pairs["index"]])
        return {"crd_s": got["crd_s"], "crd_t": got["crd_t"], "crd": got["total"]}

    def distill_weights(self, epoch: int) -> dict[str, Weight]:
        return {"cls_student": 1.0, "crd": self.opts.weight}
