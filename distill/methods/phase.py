"""The fixed-teacher schedule (`TeacherPhase`), held as `self.phase` by every method with
a pre-trained, then frozen teacher (crd, crcd; kd, ts, ts_ta and amid with `fixed_teacher`),
with its options `base.FixedTeacherOptions`, and its best-epoch pick (`TeacherSnapshot`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from amid.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from amid.distill.methods.base import Method

log = logging.getLogger(__name__)


class TeacherPhase:
    """The teacher CE-trained for the first `teacher_epochs` epochs of the run, then frozen
    (`Method.freeze`), or loaded from `teacher_run` and frozen from the start. A schedule
    that would leave the student no epoch, or distil from an untrained teacher, is refused
    before anything trains."""

    def __init__(self, method: Method, teacher: nn.Module, opts: Any) -> None:
        ctx = method.ctx
        self.method, self.teacher = method, teacher
        self.snapshot: TeacherSnapshot | None = None
        key = f"methods.{ctx.name}"
        if opts.teacher_run:
            if opts.teacher_pick == "best":
                raise ConfigError(f"{key}.teacher_pick: best picks among the pre-training "
                                  f"epochs, and {key}.teacher_run loads a trained teacher "
                                  "(no epoch to pick from): use last")
            from amid.distill.inference import load_weights

            path = Path(opts.teacher_run) / "teacher.safetensors"
            if not path.exists():
                raise ConfigError(f"{key}.teacher_run: {path} does not exist (train the "
                                  f"`teacher` method into {opts.teacher_run} first)")
            load_weights(teacher, path)
            method.freeze(teacher)
            self.pretrain = 0
        elif not 1 <= opts.teacher_epochs < ctx.epochs:
            online = (f", or set {key}.fixed_teacher false for an online teacher"
                      if hasattr(opts, "fixed_teacher") else "")
            raise ConfigError(
                f"{key} distils from a pre-trained teacher: {key}.teacher_epochs (now "
                f"{opts.teacher_epochs}) must be >= 1 and below train.epochs ({ctx.epochs}) "
                f"so that both teacher and student train, or {key}.teacher_run must name a "
                f"`teacher` run folder{online}")
        else:
            self.pretrain = opts.teacher_epochs
            if opts.teacher_pick == "best":
                if "val" not in ctx.data.splits:
                    raise ConfigError(f"{key}.teacher_pick: best picks the teacher by its "
                                      "validation Top-1, and the dataset has no validation "
                                      "split: use last, or give the manifest `val` rows")
                # a submodule of the method: its state is in the checkpoint (resume)
                self.snapshot = TeacherSnapshot(teacher)
                method.add_module("teacher_snapshot", self.snapshot)

    def distilling(self, epoch: int) -> bool:
        return epoch >= self.pretrain

    def begin_epoch(self, epoch: int) -> None:
        if self.distilling(epoch):
            if epoch == self.pretrain and self.snapshot is not None:
                self.snapshot.restore()  # a no-op when it already ran (resume reruns it)
            self.method.freeze(self.teacher)

    def after_validation(self, epoch: int, row: dict[str, float]) -> None:
        if self.snapshot is not None and not self.distilling(epoch):
            self.snapshot.offer(epoch, row["val_acc_teacher"])


class TeacherSnapshot(nn.Module):
    """The best pre-training teacher so far (`teacher_pick: best`): its validation Top-1,
    its epoch and a copy of its state (parameters and buffers, as `state_dict` names
    them: a classifier shared with the student included).

    Stored in the method's `state_dict` as extra state, one flat float64 tensor
    [acc, epoch, *state]: not a buffer, so a stack neither vmaps it nor copies stale
    rows over it at `sync`, and a checkpoint resumes it (float32 and small integers
    round-trip exactly). Once restored into the teacher it keeps [acc, epoch] only."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self._teacher = [teacher]  # not a submodule: its tensors are the method's already
        self.acc, self.epoch = float("-inf"), -1
        self.state: dict[str, torch.Tensor] | None = None

    def _live(self) -> dict[str, torch.Tensor]:
        # detached views of the teacher's own tensors: a stacked member's are rows of the
        # stack's leaves, so writing them writes what the stack reads
        return self._teacher[0].state_dict()

    def offer(self, epoch: int, acc: float) -> None:
        """Keep the teacher as it is now if `acc` beats the best so far (ties: earlier)."""
        if acc > self.acc:
            self.acc, self.epoch = float(acc), int(epoch)
            self.state = {k: v.detach().clone() for k, v in self._live().items()}

    @torch.no_grad()
    def restore(self) -> None:
        """Load the kept state into the teacher (in place), then drop the copy."""
        if self.state is None:
            return
        for k, v in self._live().items():
            v.copy_(self.state[k])
        log.info("teacher_pick best: the teacher of pre-training epoch %d (validation "
                 "Top-1 %.4f) is frozen", self.epoch, self.acc)
        self.state = None

    def get_extra_state(self) -> torch.Tensor:
        head = torch.tensor([self.acc, float(self.epoch)], dtype=torch.float64)
        flat = [v.reshape(-1).to(torch.float64).cpu() for v in (self.state or {}).values()]
        return torch.cat([head, *flat])

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.acc, self.epoch = float(state[0]), int(state[1])
        if state.numel() == 2:
            self.state = None
            return
        kept, at = {}, 2
        for k, v in self._live().items():
            kept[k] = state[at:at + v.numel()].reshape(v.shape).to(v.dtype).to(v.device)
            at += v.numel()
        if at != state.numel():
            raise CheckpointError(f"teacher_snapshot: a checkpoint's kept teacher holds "
                              f"{state.numel() - 2} values, this teacher {at - 2}")
        self.state = kept


def training_disagreement(teacher: nn.Module, data: Any, chunk: int = 512) -> float:
    """The fraction of the training rows (those with every auxiliary modality) whose label
    is not the eval-mode teacher's top class: `min_disagreement`'s measure (ts, ts_ta,
    amid). `data` is the run's TrainData (its own training rows, a subsample included)."""
    from amid.distill.predictions import accuracy, predict_chunks

    rows = data.splits["train"]
    chunks = predict_chunks(teacher, lambda b: teacher(b.target, b.auxiliary)["logits_t"],
                            data.batch, rows, chunk)
    hit = accuracy(torch.cat(chunks), data.labels[rows], data.aux_present[rows].float())
    return 1.0 - float(hit)
