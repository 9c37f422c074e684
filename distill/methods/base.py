"""What a training method provides to the trainer (`amid.distill.train`).

A method is an `nn.Module` that owns its networks, its options and its phases, and says how
to score a batch. Adding one is one file in `distill/methods/` with a subclass, an `Options`
model (its keys under `methods.<name>` in params.yaml, ranges beside the fields) and a
`@METHODS.register("name")` line (`methods/__init__.py` imports every module there); it can
then be trained, swept and stacked with no other change.

The trainer, per batch (all tensors stay on the device)::

    out = method(batch)                                  # forward(): each encoder runs once
    if method.discriminator_step(epoch):                 # decided by the epoch alone
        d = method.discriminator_losses(batch, out, epoch)
        step method.discriminators on d["total"] (lr train.disc_lr), unless d is None
    terms = method.losses(batch, out, epoch)             # named, UNWEIGHTED scalars
    weights = method.weights(epoch)                      # term -> weight (absent: 0, logged only)
    step every other parameter on sum(weights[k] * terms[k])   (lr train.lr)

and per epoch `begin_epoch(epoch)` before it, `end_epoch(epoch)` after it (extra scalars to
log, e.g. discriminator weights), `predict(batch)` for the metrics and `outputs.h5`,
`exports()` for the safetensors files. Keep the key set of `losses()` the same every epoch
(0 for a term that is off), so the history has one column per term. State that must survive
a resume belongs in buffers: the checkpoint stores the method's `state_dict()`.

Stacking (`amid.distill.stack`) runs `forward`, `losses`, `weights` and
`discriminator_losses` under `torch.func.vmap`, with the options marked `per_member`
replaced by per-member tensors: read options from `self.opts` when they are used (not copied
into attributes at construction), and never branch in Python on a `per_member` value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from amid.config import Config, ModelConfig
from amid.distill.data import Batch, TrainData
from amid.distill.methods.phase import TeacherPhase, TeacherSnapshot  # noqa: F401 (re-exported)
from amid.distill.models import Student, Teacher, build_encoder, teacher_head
from amid.errors import ConfigError
from amid.registry import Registry
from amid.schema import Schema, check_path_component, load, option

Outputs = dict[str, torch.Tensor]
Prediction = dict[str, tuple[torch.Tensor, torch.Tensor]]  # role -> (embeddings, logits)
Weight = float | torch.Tensor


class NoOptions(Schema):
    """A method without options of its own."""


class FixedTeacherOptions(Schema):
    """A teacher CE-trained first, then frozen (crd, crcd; the others' `fixed_teacher`)."""

    # CE pre-training epochs of the teacher inside the run (the first teacher_epochs
    # of train.epochs), unless teacher_run names a `teacher` run folder to load instead
    teacher_epochs: int = option(10, ge=0)
    teacher_run: str = ""
    # which pre-training epoch's teacher is frozen: the last one, or the one whose
    # validation Top-1 was highest (ties to the earlier; docs/results.md, rule D)
    teacher_pick: Literal["last", "best"] = "last"


class TeacherPhaseOptions(FixedTeacherOptions):
    """An online teacher, or with `fixed_teacher` the schedule above (paper Table 5)."""

    fixed_teacher: bool = False


@dataclass
class MethodContext:
    """Everything a method may build from: the data's shapes and the configuration."""

    data: TrainData  # modality dims/lengths/statistics, classes (read, never batch from it)
    model: ModelConfig
    opts: Any  # the method's own Options instance (methods.<name>)
    epochs: int
    name: str = ""  # the registered name, for messages naming methods.<name>.<key>

    @property
    def num_classes(self) -> int:
        return len(self.data.classes)


class Method(nn.Module):
    """Base class; subclasses set `student` (and `teacher`) and implement `losses` (or
    `distill_losses`) and `weights`."""

    Options: ClassVar[type] = NoOptions
    has_teacher: ClassVar[bool] = False
    # reads the auxiliary modalities (a teacher, gmc's joint view...): a stack cannot
    # select each member's rows with every one of them (sweep._why_not)
    uses_auxiliary: ClassVar[bool] = True
    phase: TeacherPhase | None = None  # a fixed teacher's schedule, if the method has one
    # named sets of option values (`methods.<name>.preset`), each filling only the keys
    # a section leaves out; {} for a method without presets (then `preset` is unknown)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # the default `losses`: the pair terms `distill_losses` gives, in log order; the batch
    # fields they need beside the outputs and labels, taken on the same rows; the teacher
    # CE's logits
    distill_terms: ClassVar[tuple[str, ...]] = ()
    pair_fields: ClassVar[tuple[str, ...]] = ()
    teacher_logits: ClassVar[str] = "logits_t"

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.discriminators: nn.Module | None = None
        self._frozen: list[nn.Module] = []

    @property
    def opts(self) -> Any:
        return self.ctx.opts

    # ------------------------------------------------------------ contract
    def forward(self, batch: Batch) -> Outputs:
        s, logits_s = self.student(batch.target)  # (B, d), (B, C)
        return {"s": s, "logits_s": logits_s}

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        """Named, unweighted loss terms (scalars); the same keys every epoch. Here: both CEs
        (`ce_terms`), then `distill_terms`, 0 unless distilling on two paired rows. Samples
        missing an auxiliary modality train the student's CE only."""
        zero = out["s"].new_zeros(())
        terms = ce_terms(batch, out, self.teacher_logits) | dict.fromkeys(self.distill_terms, zero)
        pairs = teacher_pairs(batch, {**out, **{k: getattr(batch, k) for k in self.pair_fields}})
        if pairs is None or not self.distilling(epoch):
            return terms
        return terms | self.distill_losses(pairs, epoch)

    def distill_losses(self, pairs: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        """The pair terms on the rows with every auxiliary modality (`pairs`: the outputs,
        `labels` and `pair_fields` on those rows), while distilling."""
        raise NotImplementedError

    def weights(self, epoch: int) -> dict[str, Weight]:
        """Term -> weight in the total; a term left out is logged but not optimised."""
        raise NotImplementedError

    def discriminator_step(self, epoch: int) -> bool:
        """Whether epoch `epoch` trains discriminators (decided by the epoch alone)."""
        return False

    def discriminator_losses(self, batch: Batch, out: Outputs,
                             epoch: int) -> dict[str, torch.Tensor] | None:
        """L_D's terms and their "total" when `discriminator_step(epoch)`; None when the
        batch gives nothing to discriminate (fewer than two paired rows)."""
        return None

    def predict(self, batch: Batch) -> Prediction:
        out = self(batch)
        pred = {"student": (out["s"], out["logits_s"])}
        if "t" in out:
            pred["teacher"] = (out["t"], out["logits_t"])
        return pred

    def distilling(self, epoch: int) -> bool:
        """Whether the student distils at `epoch` (always, without a fixed-teacher phase)."""
        return self.phase is None or self.phase.distilling(epoch)

    def begin_epoch(self, epoch: int) -> None:
        """Hook before epoch `epoch` (0-based); must be idempotent (it reruns on resume).
        Here: a fixed-teacher phase freezes its teacher."""
        if self.phase is not None:
            self.phase.begin_epoch(epoch)

    def end_epoch(self, epoch: int) -> dict[str, torch.Tensor]:
        """Hook after epoch `epoch`; returns extra scalars to log."""
        return {}

    def after_validation(self, epoch: int, row: dict[str, float]) -> None:
        """Hook after epoch `epoch`'s validation, with its logged row (`val_acc_teacher`,
        ...), the member's own weights synced: e.g. to keep the best teacher so far.
        Here: a fixed-teacher phase sees it."""
        if self.phase is not None:
            self.phase.after_validation(epoch, row)

    def exports(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        """Modules saved at the end, name -> (module, architecture kwargs for its JSON)."""
        arch = {"encoder": self.student.encoder.config(), "num_classes": self.ctx.num_classes}
        found: dict[str, tuple[nn.Module, dict[str, Any]]] = {"student": (self.student, arch)}
        teacher, m = getattr(self, "teacher", None), self.ctx.model
        if isinstance(teacher, Teacher):
            found["teacher"] = (teacher, {
                "student_encoder": teacher.student_encoder.config(),
                "aux_encoder": teacher.aux_encoder.config(),
                "head": {"dim": m.dim, "hidden": m.hidden, "dropout": m.dropout},
                "num_classes": self.ctx.num_classes})
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
        if not self.is_frozen(module):
            self._frozen.append(module)

    def is_frozen(self, module: nn.Module) -> bool:
        """Frozen by `freeze` (asked of the method: under vmap, `requires_grad` of the
        stacked tensors says nothing about a member's own parameters)."""
        return any(m is module for m in self._frozen)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self


# ------------------------------------------------------------------ builders
def build_student(ctx: MethodContext) -> Student:
    enc = build_encoder(ctx.data.target, ctx.model.student, ctx.model)
    return Student(enc, nn.Linear(ctx.model.dim, ctx.num_classes))


def needs_auxiliary(ctx: MethodContext) -> None:
    if not ctx.data.auxiliary:
        raise ConfigError(f"method {ctx.name!r} needs auxiliary modalities "
                          "(dataset.auxiliary is empty)")


def build_teacher(ctx: MethodContext, student: Student | None = None,
                  separate: bool = False) -> Teacher:
    """H_T over E_S and E_A. With `student`: its classifier g, and its E_S unless `separate`
    or `model.teacher_encoders: separate` (then a copy, same init). Without: a teacher
    sharing nothing with the student, with its own E_S and classifier (crd, crcd, kd)."""
    needs_auxiliary(ctx)
    m = ctx.model
    separate = separate or m.teacher_encoders == "separate"
    shared = student is not None and not separate
    s_enc = student.encoder if shared else build_encoder(ctx.data.target, m.student, m)
    if student is not None and separate:
        s_enc.load_state_dict(student.encoder.state_dict())
    a_enc = build_encoder(ctx.data.auxiliary, m.auxiliary, m, clip_mlp=True)
    head = teacher_head(m.dim, m.hidden, m.dropout)
    g = nn.Linear(m.dim, ctx.num_classes) if student is None else student.classifier
    return Teacher(s_enc, a_enc, head, g)


def forward_with_teacher(method: Method, batch: Batch) -> Outputs:
    """Student and teacher (a `forward`): a teacher sharing E_S reuses the student's s;
    no graph through a frozen teacher."""
    s, logits_s = method.student(batch.target)  # (B, d), (B, C)
    shared = method.teacher.student_encoder is method.student.encoder
    with torch.set_grad_enabled(torch.is_grad_enabled() and not method.is_frozen(method.teacher)):
        tout = method.teacher(batch.target, batch.auxiliary, s if shared else None)
    return {"s": s, "logits_s": logits_s, **tout}  # + a, t (B, d), logits_t (B, C)


def ce_terms(batch: Batch, out: Outputs, teacher_logits: str = "logits_t") -> Outputs:
    """The student's CE, and the teacher's on the rows with every auxiliary modality."""
    return {"cls_student": F.cross_entropy(out["logits_s"], batch.labels),
            "cls_teacher": masked_ce(out[teacher_logits], batch.labels, batch.aux_present)}


def masked_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean CE over rows where `keep` (B,) is True; 0 when none, and no host sync."""
    per = F.cross_entropy(logits, labels, reduction="none")  # (B,)
    weight = keep.to(per.dtype)
    return (per * weight).sum() / weight.sum().clamp(min=1)


def teacher_pairs(batch: Batch, out: Outputs) -> Outputs | None:
    """`out` plus the batch's `labels` on the rows with every auxiliary modality (the pair
    terms' rows), or None when fewer than two: no pair, no MI, JSD or contrastive term."""
    rows = batch.teacher_rows
    if rows is None:  # every row has them: no indexing, no host sync
        return {**out, "labels": batch.labels}
    if rows.numel() < 2:  # rows came from nonzero(): its size is known on the host
        return None
    return {k: v[rows] for k, v in {**out, "labels": batch.labels}.items()}


def weighted_total(terms: dict[str, torch.Tensor], weights: dict[str, Weight]) -> torch.Tensor:
    """The optimised loss: the sum of weight * term over the weighted terms."""
    return sum(weights[k] * terms[k] for k in weights)


METHODS: Registry[type[Method]] = Registry("method")


# ------------------------------------------------------------------ options
#
# `methods.<name>` is either a registered method's own section (`methods.amid`) or a
# named variant: a section with `method: <registered name>` (`methods.amid_ccl:
# {method: amid, mi_variant: ccl}`) that trains that method with its own options into
# runs/<name>. A variant starts from the method's defaults (and its preset), never from
# another section: each DVC stage reads its own `methods.<name>` only, so nothing it
# does not depend on may change what it trains.

def registered_method(name: str, raw: dict[str, Any] | None) -> str:
    """The registered method `methods.<name>` trains: its `method` key, else `name`."""
    target = (raw or {}).get("method", name)
    key = f"methods.{name}.method"
    if not isinstance(target, str) or target not in METHODS:
        if "method" in (raw or {}):
            raise ConfigError(f"{key}: unknown method {target!r}; known: "
                              f"{', '.join(METHODS.names())}")
        raise ConfigError(f"methods.{name}: unknown method {name!r}; known: "
                          f"{', '.join(METHODS.names())} (or give methods.{name} a "
                          "`method: <one of them>` key to train one under this name)")
    if name in METHODS and target != name:  # methods.amid must train amid
        raise ConfigError(f"{key}: the section of method {name!r} cannot train {target!r}; "
                          "give the variant a name of its own")
    return target


def method_class(name: str, raw: dict[str, Any] | None) -> type[Method]:
    """The class that trains `methods.<name>` (a registered method or a variant of one)."""
    return METHODS.get(registered_method(name, raw))


def method_options(name: str, raw: dict[str, Any] | None) -> Any:
    """`methods.<name>` typed by its method's Options: the keys given, then its `preset`'s
    values for the keys not given, then the defaults."""
    cls = method_class(name, raw)
    data = {k: v for k, v in (raw or {}).items() if k != "method"}
    if cls.presets:
        preset = data.get("preset", cls.Options.model_fields["preset"].default)  # paper
        if not isinstance(preset, str) or preset not in cls.presets:
            raise ConfigError(f"methods.{name}.preset: must be one of "
                              f"{', '.join(map(repr, cls.presets))}, got {preset!r}")
        data = {**cls.presets[preset], **data}
    return load(cls.Options, data, f"methods.{name}")


def method_record(name: str, raw: dict[str, Any] | None) -> dict[str, Any]:
    """What a run records of its method (config.json's `config.methods.<name>`): every
    resolved option, `preset` among them where the method has presets, and `method`,
    the registered method trained."""
    return {**method_options(name, raw).model_dump(), "method": registered_method(name, raw)}


def known_method(name: str, cfg: Config, key: str) -> str:
    """`name` checked as a method or variant that `cfg` can train (`key` names the setting):
    one path component (it names runs/<name> and DVC stages), then a known method."""
    check_path_component(name, key)
    if name not in METHODS and "method" not in cfg.methods.get(name, {}):
        variants = sorted(n for n, raw in cfg.methods.items() if "method" in raw)
        raise ConfigError(f"{key}: unknown method {name!r}; known: "
                          f"{', '.join(METHODS.names() + variants)}")
    return name


def check_method_options(cfg: Config) -> None:
    """Every `methods.<name>` section against its method's Options, and every name a
    stage or grid trains (for `load_config`)."""
    for name, raw in cfg.methods.items():
        check_path_component(name, f"methods.{name}")  # a variant's name is a run's
        method_options(name, raw)
    for i, name in enumerate(cfg.pipeline.methods):
        known_method(name, cfg, f"pipeline.methods[{i}]")
        method_options(name, cfg.methods.get(name))
    for key, sweep in cfg.sweeps.items():
        known_method(sweep.method, cfg, f"sweeps.{key}.method")
