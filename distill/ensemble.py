"""A stacked ensemble: M same-shaped members of one method computed as batched tensors.

Why not `torch.func.vmap` over the method: `nn.GRU`/`nn.LSTM` have no vmap
batching rule (on CUDA they fall back to one cuDNN call per member), the
adversarial loss needs `torch.unique`, and dropout under vmap draws from one
stream, so no member could match its lone run. Instead the members' weights
are batched by hand: every linear layer is one `baddbmm` over the member
dimension M, and the RNNs run their cell equations (the same ones
`nn.GRU`/`nn.LSTM` use on the CPU) over all members at once.

Parameters live in ONE flat leaf tensor (M, P) per optimiser (networks,
discriminators); each layer sees a view from a single `split`, so the backward
pass writes one (M, P) gradient and the optimiser is a handful of kernels
regardless of layer count. Modules are looked up through the members' own
template `Method` (shared encoders resolve to one stacked tensor because the
lookup is by parameter identity), which is also how weights go back to each
member at the end (`unstack`).

Dropout: on the CPU every member draws its masks from its own generator,
seeded like the lone run's global generator, in the lone run's order (student
encoders, auxiliary encoders, teacher head), so a member reproduces its lone
run bit for bit up to float rounding. On a GPU one generator serves the whole
stack (independent masks, one kernel); GPU runs are not bitwise reproducible
against the CPU anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amid.distill.methods.base import Method
from amid.distill.models import MultiModalEncoder, SequenceEncoder, reverse_padded, step_mask

Tensor = torch.Tensor
StackInputs = dict[str, tuple[Tensor, Tensor]]  # modality -> (x (M,B,T,D), lengths (M,B))


class Noise:
    """Dropout masks for the stack: per-member generators (CPU, exact) or one shared one."""

    def __init__(self, generators: list[torch.Generator] | None,
                 shared: torch.Generator | None = None) -> None:
        self.generators = generators
        self.shared = shared
        self.training = True

    def dropout(self, x: Tensor, p: float) -> Tensor:
        """`F.dropout` semantics: x (M, ...) * Bernoulli(1-p) / (1-p); identity when off."""
        if not self.training or p == 0.0:
            return x
        if self.generators is not None:
            # the lone run's CPU dropout: empty_like(x).bernoulli_(1-p).div_(1-p), then x * noise
            noise = torch.stack([torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
                                 .bernoulli_(1 - p, generator=g) for g in self.generators])
        else:
            noise = torch.empty_like(x).bernoulli_(1 - p, generator=self.shared)
        return x * noise.div_(1 - p)


class Stack:
    """Weights of M members (same class, same shapes) as flat (M, P) leaves on `device`.

    `groups` names the flat leaves: "net" (everything the main optimiser
    steps) and, when the method has discriminators, "disc".
    """

    def __init__(self, members: list[Method], device: torch.device) -> None:
        self.template = members[0]
        self.size = len(members)
        disc = self.template.discriminators
        disc_ids = {id(p) for p in disc.parameters()} if disc is not None else set()
        self.names: dict[str, list[str]] = {"net": [], "disc": []}
        for name, p in self.template.named_parameters():
            self.names["disc" if id(p) in disc_ids else "net"].append(name)
        self.flat: dict[str, Tensor] = {}
        self._ids: dict[str, list[int]] = {}
        self._shapes: dict[str, list[torch.Size]] = {}
        for group, names in self.names.items():
            if not names:
                continue
            params = [[m.get_parameter(n).detach() for n in names] for m in members]
            rows = [torch.cat([p.reshape(-1) for p in ps]) for ps in params]
            self.flat[group] = torch.stack(rows).to(device).requires_grad_(True)  # (M, P)
            self._ids[group] = [id(self.template.get_parameter(n)) for n in names]
            self._shapes[group] = [self.template.get_parameter(n).shape for n in names]
        self.buffers = {id(b): b.to(device) for b in self.template.buffers()}

    def views(self, detach_disc: bool = False) -> dict[int, Tensor]:
        """Template parameter id -> (M, *shape) view of the flat leaf (one split per group)."""
        out: dict[int, Tensor] = {}
        for group, flat in self.flat.items():
            src = flat.detach() if detach_disc and group == "disc" else flat
            sizes = [s.numel() for s in self._shapes[group]]
            for pid, part, shape in zip(self._ids[group], src.split(sizes, dim=1),
                                        self._shapes[group], strict=True):
                out[pid] = part.view(self.size, *shape)
        return out

    def unstack(self, member: int, into: Method) -> None:
        """Copy member `member`'s weights into `into` (a method of the same structure)."""
        with torch.no_grad():
            for group, names in self.names.items():
                if not names:
                    continue
                parts = self.flat[group][member].split([s.numel() for s in self._shapes[group]])
                for name, part in zip(names, parts, strict=True):
                    dst = into.get_parameter(name)
                    dst.copy_(part.view(dst.shape).to(dst.device))


class StackForward:
    """The members' forward pass, written against the template's modules."""

    def __init__(self, stack: Stack, noise: Noise) -> None:
        self.stack = stack
        self.noise = noise
        self.p: dict[int, Tensor] = {}

    def __call__(self, target: StackInputs, auxiliary: StackInputs,
                 teacher: bool) -> dict[str, Tensor]:
        """Outputs like `Method.forward`, each with a leading member dimension (M, B, ...)."""
        self.p = self.stack.views()
        method = self.stack.template
        s = self.encoder(method.student.encoder, target)  # (M, B, d)
        out = {"s": s, "logits_s": self.linear(method.student.classifier, s)}
        if teacher:
            tm = method.teacher
            shared = tm.student_encoder is method.student.encoder
            s_t = s if shared else self.encoder(tm.student_encoder, target)
            a = self.encoder(tm.aux_encoder, auxiliary)  # (M, B, d)
            t = self.sequential(tm.head, torch.cat([s_t, a], dim=-1))
            out |= {"a": a, "t": t, "logits_t": self.linear(tm.classifier, t)}
        return out

    def discriminator(self, module: nn.Sequential, x: Tensor, frozen: bool) -> Tensor:
        """Logits (M, N) of a discriminator; `frozen` uses detached weights (L_adv)."""
        saved = self.p
        if frozen:
            self.p = {**self.p, **self.stack.views(detach_disc=True)}
        try:
            return self.sequential(module, x)[..., 0]
        finally:
            self.p = saved

    # ------------------------------------------------------------ layers
    def linear(self, mod: nn.Linear, x: Tensor) -> Tensor:
        """x (M, ..., in) -> (M, ..., out) with each member's own weight and bias."""
        w, b = self.p[id(mod.weight)], self.p[id(mod.bias)]  # (M, out, in), (M, out)
        lead = x.shape[:-1]
        y = torch.baddbmm(b[:, None, :], x.reshape(self.stack.size, -1, x.shape[-1]),
                          w.transpose(1, 2))
        return y.view(*lead, w.shape[1])

    def sequential(self, seq: nn.Sequential, x: Tensor) -> Tensor:
        for layer in seq:
            if isinstance(layer, nn.Linear):
                x = self.linear(layer, x)
            elif isinstance(layer, nn.LeakyReLU):
                x = F.leaky_relu(x, layer.negative_slope)
            elif isinstance(layer, nn.Dropout):
                x = self.noise.dropout(x, layer.p)
            else:  # models.mlp builds only these three
                raise TypeError(f"stacked forward has no rule for {type(layer).__name__}")
        return x

    def encoder(self, enc: MultiModalEncoder, inputs: StackInputs) -> Tensor:
        parts = [self.sequence(e, *inputs[m]) for m, e in enc.encoders.items()]  # (M, B, d)
        if enc.fuse is None:
            return parts[0]
        return self.linear(enc.fuse, torch.cat(parts, dim=-1))

    def sequence(self, enc: SequenceEncoder, x: Tensor, lengths: Tensor) -> Tensor:
        """`SequenceEncoder.forward` for x (M, B, T, D), lengths (M, B) -> (M, B, out)."""
        buf = self.stack.buffers
        x = (x - buf[id(enc.mean)]) / buf[id(enc.std)]
        mask = step_mask(lengths.reshape(-1), x.shape[2]).view(*lengths.shape, -1)  # (M, B, T)
        if enc.kind in ("pool", "mlp"):
            m = mask[..., None].to(x.dtype)
            pooled = (x * m).sum(2) / m.sum(2).clamp(min=1)  # (M, B, D)
            if enc.kind == "pool":
                peak = x.masked_fill(~mask[..., None], float("-inf")).amax(2)
                pooled = torch.cat([pooled, peak], dim=-1)
            return self.sequential(enc.head, pooled)
        size, batch, steps = x.shape[:3]
        flat_len = lengths.reshape(-1)
        h = x
        out_f = x
        for k, fwd in enumerate(enc.fwd):
            if k:
                h = self.noise.dropout(h, enc.drop.p)
            out_f = self.rnn(fwd, h)  # (M, B, T, H)
            if enc.bwd is None:
                h = out_f
                continue
            rev = reverse_padded(h.reshape(size * batch, steps, -1), flat_len)
            out_b = self.rnn(enc.bwd[k], rev.view(size, batch, steps, -1))
            out_b = reverse_padded(out_b.reshape(size * batch, steps, -1), flat_len)
            h = torch.cat([out_f, out_b.view(size, batch, steps, -1)], dim=-1)
        rows = torch.arange(size * batch, device=x.device)
        last = h.reshape(size * batch, steps, -1)[rows, flat_len - 1].view(size, batch, -1)
        if enc.bwd is not None:
            hidden = out_f.shape[-1]
            last = torch.cat([last[..., :hidden], h[:, :, 0, hidden:]], dim=-1)
        return self.linear(enc.proj, self.noise.dropout(last, enc.drop.p))

    def rnn(self, mod: nn.GRU | nn.LSTM, x: Tensor) -> Tensor:
        """One single-layer unidirectional GRU/LSTM over x (M, B, T, In) -> (M, B, T, H).

        The input projection of all steps is one batched matmul, as in PyTorch's
        CPU kernel; the recurrence is the cell equations, step by step.
        """
        w_ih, w_hh = self.p[id(mod.weight_ih_l0)], self.p[id(mod.weight_hh_l0)]
        b_ih, b_hh = self.p[id(mod.bias_ih_l0)], self.p[id(mod.bias_hh_l0)]
        size, batch, steps, _ = x.shape
        hidden = w_hh.shape[2]
        gi = self.linear_raw(x, w_ih, b_ih).view(size, batch, steps, -1)  # (M, B, T, G*H)
        h = x.new_zeros(size, batch, hidden)
        c = x.new_zeros(size, batch, hidden)
        lstm = isinstance(mod, nn.LSTM)
        outs = []
        for t in range(steps):
            gh = torch.baddbmm(b_hh[:, None, :], h, w_hh.transpose(1, 2))  # (M, B, G*H)
            if lstm:
                i, f, g, o = (gh + gi[:, :, t]).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                i_r, i_z, i_n = gi[:, :, t].chunk(3, dim=-1)
                h_r, h_z, h_n = gh.chunk(3, dim=-1)
                r = torch.sigmoid(h_r + i_r)
                z = torch.sigmoid(h_z + i_z)
                n = torch.tanh(i_n + h_n * r)
                h = (h - n) * z + n
            outs.append(h)
        return torch.stack(outs, dim=2)

    def linear_raw(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return torch.baddbmm(b[:, None, :], x.reshape(self.stack.size, -1, x.shape[-1]),
                             w.transpose(1, 2))
