"""`gmc`: Geometric Multimodal Contrastive learning (Poklukar et al., ICML 2022), docs/method.md.

Follows the authors' supervised code, miguelsvasco/gmc
`gmc_code/supervised/architectures/models/gmc.py` (`SuperGMC`) and its training
configurations (`ingredients/stage_specific/model_ingredients.py`). Views: the target
modalities (through the student encoder E_S, one view) and each auxiliary modality (its own
encoder). A joint encoder reads every modality; one shared head P (a linear layer d -> d,
then L2 normalisation, as the authors' `AffectEncoder`) maps every view and the joint
representation to the common space. The objective is

    CE(g(s), y) + weight * sum_v NT-Xent( P(h_v), P(h_joint) )    (temperature 0.3)

with the loss of `super_gmc_loss` (`amid.distill.losses.ntxent`, exact),
weight 1 and the temperature 0.3 of the authors' supervised configurations
(MOSI, MOSEI; their unsupervised MHD configuration uses 0.1): supervised, as here.
The student is E_S + g; the auxiliary and joint encoders and P only shape
its representation and are not reported (GMC has no teacher).

Differences from the authors' code, and why:

- Classifier: the authors classify the shared head's output through a residual 2-layer MLP
  and train it on the joint representation only (a test with missing modalities averages the
  available views' outputs). Here the student's linear g reads s and trains on the student's
  own view with CE: a run delivers E_S + a linear g (`student.safetensors`, rebuilt by
  `amid.distill.inference.load_student`) that is scored on the target modalities alone, so
  the classifier must be the student's. The authors' supervised task is regression (L1);
  this one is classification (CE).
- Joint encoder: the authors' reads the raw concatenated sequences (a
  cross-modal transformer); here sequences of different lengths cannot be
  concatenated, so the joint encoder has its own per-modality sequence
  encoders whose outputs are concatenated and fused by a 2-layer MLP.
- Several target modalities form a single view (the student's fused encoder), not one view
  each. The contrastive terms use the samples with every auxiliary modality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amid.config import ModelConfig
from amid.distill.data import Batch, ModalityData
from amid.distill.losses.ntxent import ntxent_loss
from amid.distill.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Outputs,
    Prediction,
    Weight,
    build_student,
    needs_auxiliary,
    teacher_pairs,
)
from amid.distill.models import Inputs, SequenceEncoder, build_encoder, encoder_spec, mlp
from amid.schema import Schema, option


class JointEncoder(nn.Module):
    """Own sequence encoder per modality, outputs concatenated, fused by an MLP to d."""

    def __init__(self, target: dict[str, ModalityData], auxiliary: dict[str, ModalityData],
                 cfg: ModelConfig) -> None:
        super().__init__()
        spec = {**encoder_spec(target, cfg.student, cfg, clip_mlp=False),
                **encoder_spec(auxiliary, cfg.auxiliary, cfg, clip_mlp=True)}
        self.encoders = nn.ModuleDict({m: SequenceEncoder(**kw) for m, kw in spec.items()})
        for m, d in {**target, **auxiliary}.items():
            self.encoders[m].set_normalisation(d.mean, d.std)
        self.fuse = mlp([cfg.dim * len(spec), cfg.hidden, cfg.dim], cfg.dropout)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        parts = [enc(*inputs[m]) for m, enc in self.encoders.items()]  # each (B, d)
        return self.fuse(torch.cat(parts, dim=1))  # (B, d)


class GMCOptions(Schema):
    """`methods.gmc`."""

    weight: float = option(1.0, ge=0, per_member=True)  # NT-Xent, summed over views
    temperature: float = option(0.3, gt=0)  # the authors' supervised configurations


@METHODS.register("gmc")
class GMC(Method):
    """Student CE plus GMC's modality-to-joint NT-Xent (see the module docstring)."""

    Options = GMCOptions

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        needs_auxiliary(ctx)
        m = ctx.model
        self.student = build_student(ctx)
        self.aux_encoders = nn.ModuleDict({
            name: build_encoder({name: d}, m.auxiliary, m, clip_mlp=True)
            for name, d in ctx.data.auxiliary.items()
        })
        self.joint = JointEncoder(ctx.data.target, ctx.data.auxiliary, m)
        # the shared head: linear, its output L2-normalised in ntxent_loss (AffectEncoder)
        self.projection = nn.Linear(m.dim, m.dim)
        # term names: the target view is named after its modalities
        self.views = ["_".join(ctx.data.target), *ctx.data.auxiliary]

    def forward(self, batch: Batch) -> Outputs:
        out = super().forward(batch)  # the student's s (B, d), logits_s (B, C)
        for name, enc in self.aux_encoders.items():
            out[f"h_{name}"] = enc({name: batch.auxiliary[name]})  # (B, d)
        out["h_joint"] = self.joint({**batch.target, **batch.auxiliary})  # (B, d)
        return out

    def predict(self, batch: Batch) -> Prediction:
        s, logits_s = self.student(batch.target)  # the other encoders do not report
        return {"student": (s, logits_s)}

    def losses(self, batch: Batch, out: Outputs, epoch: int) -> dict[str, torch.Tensor]:
        zero = out["s"].new_zeros(())
        terms = {"cls_student": F.cross_entropy(out["logits_s"], batch.labels),
                 **{f"gmc_{v}": zero for v in self.views}, "gmc": zero}
        names = ["s", *(f"h_{name}" for name in self.aux_encoders), "h_joint"]
        pairs = teacher_pairs(batch, {k: out[k] for k in names})
        if pairs is None:
            return terms
        hs = [pairs[k] for k in names]
        z = self.projection(torch.cat(hs)).split(hs[0].shape[0])  # shared head, one pass
        for view, z_v in zip(self.views, z[:-1], strict=True):
            terms[f"gmc_{view}"] = ntxent_loss(z_v, z[-1], self.opts.temperature)  # vs joint
        terms["gmc"] = sum((terms[f"gmc_{v}"] for v in self.views), zero)
        return terms

    def weights(self, epoch: int) -> dict[str, Weight]:
        return {"cls_student": 1.0, "gmc": self.opts.weight}  # gmc_<view>: its parts
