"""What a training method provides to the trainer (`amid.distill.train`).

A method is an `nn.Module` that owns its networks and says how to score a
batch. Adding one is one file in `distill/methods/` with a subclass and a
`@METHODS.register("name")` line, plus its import in `methods/__init__.py`.

The trainer, per batch (all tensors stay on the device)::

    out = method(batch)                                  # forward(): each encoder runs once
    d = method.discriminator_losses(batch, out, epoch)   # None: no discriminator step
    if d is not None: step method.discriminators on d["total"] (lr train.disc_lr)
    terms = method.losses(batch, out, epoch)             # named scalars incl. "total"
    step every other parameter on terms["total"]         (lr train.lr)

and per epoch `begin_epoch(epoch)` before it, `end_epoch(epoch)` after it
(extra scalars to log, e.g. discriminator weights), `predict(batch)` for the
metrics and `outputs.h5`, `exports()` for the safetensors files. Keep the key
set of `losses()` the same every epoch (report 0 for a term that is off), so
the per-epoch history has one column per term. State that must survive a
resume (e.g. dynamic weights) belongs in buffers: the checkpoint stores the
method's `state_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from amid.config import LossConfig, ModelConfig
from amid.distill.data import Batch, TrainData
from amid.distill.models import Student, Teacher, build_encoder, teacher_head
from amid.registry import Registry

Outputs = dict[str, torch.Tensor]
Prediction = dict[str, tuple[torch.Tensor, torch.Tensor]]  # role -> (embeddings, logits)


@dataclass
class MethodContext:
    """Everything a method may build from: the data's shapes and the configuration."""

    data: TrainData  # modality dims/lengths/statistics, classes (read, never batch from it)
    model: ModelConfig
    loss: LossConfig
    epochs: int

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


class Method(nn.Module):
    """Base class; subclasses set `student` (and `teacher`) and implement `losses`."""

    has_teacher: ClassVar[bool] = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.discriminators: nn.Module | None = None
        self._frozen: list[nn.Module] = []

    # ------------------------------------------------------------ contract
    def forward(self, batch: Batch) -> Outputs:
        s, logits_s = self.student(batch.target)  # (B, d), (B, C)
        return {"s": s, "logits_s": logits_s}

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def discriminator_losses(self, batch: Batch, out: Outputs,
                             epoch: int) -> dict[str, torch.Tensor] | None:
        return None

    def predict(self, batch: Batch) -> Prediction:
        out = self(batch)
        pred = {"student": (out["s"], out["logits_s"])}
        if "t" in out:
            pred["teacher"] = (out["t"], out["logits_t"])
        return pred

    def begin_epoch(self, epoch: int) -> None:
        """Hook before epoch `epoch` (0-based); must be idempotent (it reruns on resume)."""

    def end_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        """Hook after epoch `epoch`; returns extra scalars to log."""
        return {}

    def exports(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        """Modules saved at the end, name -> (module, architecture kwargs for its JSON)."""
        arch = {"encoder": self.student.encoder.config(), "num_classes": self.ctx.num_classes}
        found: dict[str, tuple[nn.Module, dict[str, Any]]] = {"student": (self.student, arch)}
        teacher = getattr(self, "teacher", None)
        if isinstance(teacher, Teacher):
            found["teacher"] = (teacher, teacher_arch(teacher, self.ctx))
        return found

    # ------------------------------------------------------------ helpers
    def network_parameters(self) -> list[nn.Parameter]:
        """Everything the main optimiser steps: all parameters but the discriminators'."""
        disc = {id(p) for p in self.discriminators.parameters()} if self.discriminators else set()
        return [p for p in self.parameters() if id(p) not in disc]

    def freeze(self, module: nn.Module) -> None:
        """requires_grad False and eval mode for good (`train()` keeps it in eval)."""
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()
        if all(m is not module for m in self._frozen):
            self._frozen.append(module)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self


# ------------------------------------------------------------------ builders


def build_student(ctx: MethodContext) -> Student:
    enc = build_encoder(ctx.data.target, ctx.model.student, ctx.model)
    return Student(enc, nn.Linear(ctx.model.dim, ctx.num_classes))


def build_teacher(ctx: MethodContext, student: Student, separate: bool) -> Teacher:
    """H_T over E_S and E_A; `separate` gives the teacher its own copy of E_S (same init)."""
    if not ctx.data.auxiliary:
        from amid.errors import ConfigError

        raise ConfigError("this method needs auxiliary modalities (dataset.auxiliary is empty)")
    s_enc = student.encoder
    if separate:
        s_enc = build_encoder(ctx.data.target, ctx.model.student, ctx.model)
        s_enc.load_state_dict(student.encoder.state_dict())
    a_enc = build_encoder(ctx.data.auxiliary, ctx.model.auxiliary, ctx.model, clip_mlp=True)
    head = teacher_head(ctx.model.dim, ctx.model.hidden, ctx.model.dropout)
    return Teacher(s_enc, a_enc, head, student.classifier)


def teacher_arch(teacher: Teacher, ctx: MethodContext) -> dict[str, Any]:
    return {
        "student_encoder": teacher.student_encoder.config(),
        "aux_encoder": teacher.aux_encoder.config(),
        "head": {"dim": ctx.model.dim, "hidden": ctx.model.hidden, "dropout": ctx.model.dropout},
        "num_classes": ctx.num_classes,
    }


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean CE over rows where `keep` (B,) is True; 0 when none, and no host sync."""
    per = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    weight = keep.to(per.dtype)
    return (per * weight).sum() / weight.sum().clamp(min=1)


METHODS: Registry[type[Method]] = Registry("method")
