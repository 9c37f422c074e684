"""Networks on cached features (docs/method.md): encoders, teacher head, classifier, discriminators.

Variable lengths are handled by masking, not packing: a forward RNN's output
at step L-1 never sees the padding after it, and the backward direction runs
a second RNN over each sequence reversed *within its own length*, so padding
again comes last. This keeps every shape static and needs no `lengths.cpu()`
(packing forces a host sync per batch). Each module rebuilds from the dict its
`config()` returns, which is what `student.json` stores next to the safetensors.

RNNs run as `nn.GRU`/`nn.LSTM` (one fused kernel, cuDNN on a GPU), except
when their weights are vmapped (a stacked sweep, `amid.distill.stack`):
`torch.func.vmap` has no batching rule for those modules, so the same
weights run through their cell equations here, step by step (`rnn_cells`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from amid.config import ModelConfig

KINDS = ("gru", "lstm", "pool", "mlp")
SLOPE = 0.2  # LeakyReLU everywhere (paper 4.2: steadier adversarial training)

Inputs = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (x (B,T,D), lengths (B,))


def rnn_cells(rnn: nn.GRU | nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """A single-layer, one-direction GRU/LSTM over x (B, T, In) -> (B, T, H), step by step:
    the cell equations of PyTorch's documentation with the module's own weights (gate
    order r, z, n; i, f, g, o), every step's input projection in one matmul."""
    w_ih, w_hh = rnn.weight_ih_l0, rnn.weight_hh_l0  # (G*H, In), (G*H, H)
    b_ih, b_hh = rnn.bias_ih_l0, rnn.bias_hh_l0  # (G*H,)
    hidden = w_hh.shape[1]
    gi = torch.nn.functional.linear(x, w_ih, b_ih)  # (B, T, G*H)
    h = x.new_zeros(x.shape[0], hidden)  # (B, H)
    c = h
    outs = []
    # as few ops per step as the equations allow: under vmap every op costs the same
    # whatever its size, and the step loop is the stack's hot path. The input gates are
    # cut into per-step pieces once, by unbind/split (backward: one stack/cat), not by
    # indexing gi every step (each index's backward fills a zero tensor of gi's size).
    if isinstance(rnn, nn.LSTM):
        for gates_in in gi.unbind(1):  # T x (B, 4H)
            gates = gates_in + torch.nn.functional.linear(h, w_hh, b_hh)  # (B, 4H)
            if_, g, o_ = gates.split([2 * hidden, hidden, hidden], dim=1)  # (B, 2H), (B, H) x 2
            i, f, o = torch.sigmoid(torch.cat([if_, o_], 1)).chunk(3, dim=1)  # (B, H) each
            c = f * c + i * torch.tanh(g)
            h = o * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1)  # (B, T, H)
    gi_rz, gi_n = gi.split([2 * hidden, hidden], dim=2)  # (B, T, 2H), (B, T, H)
    for rz_in, n_in in zip(gi_rz.unbind(1), gi_n.unbind(1), strict=True):
        gh = torch.nn.functional.linear(h, w_hh, b_hh)  # (B, 3H)
        gh_rz, gh_n = gh.split([2 * hidden, hidden], dim=1)  # (B, 2H), (B, H)
        r, z = torch.sigmoid(rz_in + gh_rz).chunk(2, dim=1)  # r, z: (B, H) each
        n = torch.tanh(n_in + r * gh_n)  # (B, H)
        h = n + z * (h - n)  # (1 - z) n + z h
        outs.append(h)
    return torch.stack(outs, dim=1)  # (B, T, H)


def run_rnn(rnn: nn.GRU | nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """Outputs (B, T, H) of a single-layer RNN: the fused module, or its cell equations
    when its weights are vmapped (a stack's member: see the module's docstring)."""
    vmapped = torch._C._functorch.is_batchedtensor(rnn.weight_ih_l0)
    return rnn_cells(rnn, x) if vmapped else rnn(x)[0]


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with LeakyReLU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(nn.LeakyReLU(SLOPE))
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) bool, True on the valid steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first `length` steps, padding stays at the end. (B,T,H)."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    last = (lengths - 1)[:, None]  # (B, 1)
    src = torch.where(t <= last, last - t, t)  # (B, T)
    return x.gather(1, src[:, :, None].expand_as(x))


class SequenceEncoder(nn.Module):
    """One modality: (B, T, D) + lengths -> (B, out_dim), inputs standardised with the
    training split's statistics. kinds: "gru"/"lstm" (masked, optionally bidirectional
    RNN, last valid step), "pool" (masked mean and max over time, then an MLP: cheap),
    "mlp" (masked mean, then an MLP: for clip-level features, T = 1)."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "gru", hidden: int = 128,
                 layers: int = 1, bidirectional: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown encoder kind {kind!r}; known: {', '.join(KINDS)}")
        self.kwargs = dict(in_dim=in_dim, out_dim=out_dim, kind=kind, hidden=hidden,
                           layers=layers, bidirectional=bidirectional, dropout=dropout)
        self.kind = kind
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.drop = nn.Dropout(dropout)
        if kind in ("gru", "lstm"):
            rnn = nn.GRU if kind == "gru" else nn.LSTM
            dirs = 2 if bidirectional else 1
            sizes = [in_dim] + [hidden * dirs] * (layers - 1)
            self.fwd = nn.ModuleList(rnn(s, hidden, batch_first=True) for s in sizes)
            self.bwd = nn.ModuleList(rnn(s, hidden, batch_first=True) for s in sizes) \
                if bidirectional else None
            self.proj = nn.Linear(hidden * dirs, out_dim)
        else:
            width = 2 * in_dim if kind == "pool" else in_dim
            self.head = mlp([width, hidden, out_dim], dropout)

    def config(self) -> dict[str, Any]:
        return dict(self.kwargs)

    def set_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # in place after the subtraction: one fresh (B, T, D) tensor, not two (at a
        # stack's sizes each is a fresh mmap whose pages fault in); the same values
        x = (x - self.mean).div_(self.std)  # (B, T, D)
        mask = step_mask(lengths, x.shape[1])  # (B, T)
        if self.kind in ("pool", "mlp"):
            m = mask[:, :, None].to(x.dtype)  # (B, T, 1)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1)  # (B, D)
            if self.kind == "pool":
                peak = x.masked_fill(~mask[:, :, None], float("-inf")).amax(1)  # (B, D)
                pooled = torch.cat([pooled, peak], dim=1)  # (B, 2D)
            return self.head(pooled)  # (B, out)
        rows = torch.arange(x.shape[0], device=x.device)
        h = x
        for k, fwd in enumerate(self.fwd):
            if k:
                h = self.drop(h)
            out_f = run_rnn(fwd, h)  # (B, T, H)
            if self.bwd is None:
                h = out_f
                continue
            out_b = reverse_padded(run_rnn(self.bwd[k], reverse_padded(h, lengths)), lengths)
            h = torch.cat([out_f, out_b], dim=2)  # (B, T, 2H)
        last = h[rows, lengths - 1]  # (B, H*dirs): forward state after the last valid step
        if self.bwd is not None:
            hidden = out_f.shape[2]
            first = h[:, 0, hidden:]  # backward direction's summary sits at step 0
            last = torch.cat([last[:, :hidden], first], dim=1)
        return self.proj(self.drop(last))  # (B, out)


class MultiModalEncoder(nn.Module):
    """E_S or E_A: one `SequenceEncoder` per modality, fused by concatenation + linear to d."""

    def __init__(self, modalities: dict[str, dict[str, Any]], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.encoders = nn.ModuleDict({m: SequenceEncoder(**kw) for m, kw in modalities.items()})
        self.fuse = nn.Linear(dim * len(modalities), dim) if len(modalities) > 1 else None

    def config(self) -> dict[str, Any]:
        return {"modalities": {m: e.config() for m, e in self.encoders.items()}, "dim": self.dim}

    def forward(self, inputs: Inputs) -> torch.Tensor:
        parts = [enc(*inputs[m]) for m, enc in self.encoders.items()]  # each (B, d)
        if self.fuse is None:
            return parts[0]
        return self.fuse(torch.cat(parts, dim=1))  # (B, d)


class Student(nn.Module):
    """What a run delivers: E_S and g; needs only the target modalities."""

    def __init__(self, encoder: MultiModalEncoder, classifier: nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.encoder(inputs)  # (B, d)
        return s, self.classifier(s)  # (B, d), (B, C)


class Teacher(nn.Module):
    """Full-modality teacher t = H_T([E_S(x) ; E_A(x_aux)]) and the classifier g (the
    student's own modules when shared); CCL's teacher overrides `compose` (`methods.ccl`)."""

    def __init__(self, student_encoder: MultiModalEncoder, aux_encoder: MultiModalEncoder,
                 head: nn.Module, classifier: nn.Linear) -> None:
        super().__init__()
        self.student_encoder = student_encoder
        self.aux_encoder = aux_encoder
        self.head = head
        self.classifier = classifier

    def forward(self, target: Inputs, auxiliary: Inputs,
                s: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if s is None:
            s = self.student_encoder(target)  # (B, d)
        a = self.aux_encoder(auxiliary)  # (B, d)
        t = self.compose(a, s)  # (B, d)
        return {"a": a, "t": t, "logits_t": self.classifier(t)}

    def compose(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([s, a], dim=1))  # (B, 2d) -> (B, d)


def teacher_head(dim: int, hidden: int, dropout: float = 0.0) -> nn.Sequential:
    """H_T: 2-layer MLP on [s ; a]."""
    return mlp([2 * dim, hidden, dim], dropout)


def discriminator(dim: int, hidden: int, layers: int) -> nn.Sequential:
    """D_f (5 layers) / D_e (3 layers): representation -> logit (B, 1)."""
    return mlp([dim] + [hidden] * (layers - 1) + [1])


def encoder_spec(mods: dict[str, Any], kind: str, cfg: ModelConfig, *,
                 clip_mlp: bool) -> dict[str, dict[str, Any]]:
    """SequenceEncoder kwargs per modality; `clip_mlp` gives T = 1 modalities an MLP."""
    return {
        m: dict(in_dim=d.dim, out_dim=cfg.dim,
                kind="mlp" if clip_mlp and d.max_len == 1 else kind, hidden=cfg.hidden,
                layers=cfg.rnn_layers, bidirectional=cfg.bidirectional, dropout=cfg.dropout)
        for m, d in mods.items()
    }


def build_encoder(mods: dict[str, Any], kind: str, cfg: ModelConfig, *,
                  clip_mlp: bool = False) -> MultiModalEncoder:
    """An encoder over `mods` (name -> ModalityData), normalised with their train statistics."""
    enc = MultiModalEncoder(encoder_spec(mods, kind, cfg, clip_mlp=clip_mlp), cfg.dim)
    for m, d in mods.items():
        enc.encoders[m].set_normalisation(d.mean, d.std)
    return enc
