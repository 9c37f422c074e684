"""How the trainer calls the methods: one run (`Lone`) or M stacked members (`Stack`).

Both engines give the trainer the same interface, with a leading member
dimension M on everything they return (M = 1 for a lone run):

    batch = engine.batch(idx)                         # idx (M, B) rows
    out = engine.forward(batch)                       # {name: (M, B, ...)}
    d = engine.discriminator_losses(batch, out, e)    # {name: (M,)} or None
    terms, weights = engine.losses(batch, out, e)     # {name: (M,)}, {name: (M,)}
    preds = engine.predict(rows, batch_size)          # per member, as predictions.predict_split

`Lone` calls the method directly (fused RNN kernels, cuDNN on a GPU).

`Stack` evaluates the SAME `Method.forward`, `losses`, `weights` and
`discriminator_losses` for every member at once with `torch.func.vmap`
over `functional_call`. Each parameter lives once, stacked, (M, *shape),
for the stack's life, and each member's own `nn.Parameter` is a view of
its row: vmap reads the stacked tensor with no copy per step, the members'
optimisers update their rows in place, and each member keeps its own
optimiser, checkpoint and run folder, exactly as a lone run (its gradient
is its row of the stacked gradient, `share_grads`). Buffers live stacked
too, copied back at `sync`. Options marked `per_member` (alpha, tau...)
enter as per-member tensors. There is no second copy of any loss: a
change to a method changes its stacked members too.

What vmap needs, and where it is provided: RNN modules have no batching rule,
so recurrent encoders run their cell equations (`models.unrolled_rnns`);
random ops draw per member (`randomness="different"`), so with dropout a
stacked member is an equally valid sample of its configuration but not its
lone run's bit-for-bit twin (with dropout 0 it is, within float rounding;
tests check every method that way); every sample must have every auxiliary
modality (row selection would give members different shapes).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from amid.distill.data import Batch, TrainData
from amid.distill.methods.base import Method, Outputs
from amid.distill.models import unrolled_rnns
from amid.distill.predictions import as_split, predict_chunks, predict_split
from amid.typed import per_member_keys

Tensor = torch.Tensor


def _as_vector(value: Any, like: Tensor) -> Tensor:
    """A weight or term (float or 0-d tensor) as a float tensor, for stacking."""
    if isinstance(value, Tensor):
        return value.to(like.dtype) if value.dtype != like.dtype else value
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def losses_and_weights(method: Method, batch: Batch, out: Outputs,
                       epoch: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The method's named terms and their weights, every weight a tensor."""
    terms = method.losses(batch, out, epoch)
    like = next(iter(terms.values()))
    return terms, {k: _as_vector(w, like) for k, w in method.weights(epoch).items()}


class Lone:
    """One run: the method's own calls, results given a member dimension of 1."""

    size = 1

    def __init__(self, method: Method, data: TrainData) -> None:
        self.members = [method]
        self.method = method
        self.data = data

    def batch(self, idx: Tensor) -> Batch:
        return self.data.batch(idx[0])

    def labels(self, batch: Batch) -> Tensor:
        return batch.labels[None]  # (1, B)

    def aux_present(self, batch: Batch) -> Tensor:
        return batch.aux_present[None]  # (1, B)

    def forward(self, batch: Batch, tap: Tensor | None = None,
                epoch: int | None = None) -> Outputs:
        self.method.student.tap = None if tap is None else tap[0]
        try:
            return {k: v[None] for k, v in self.method(batch).items()}
        finally:
            self.method.student.tap = None

    def discriminator_losses(self, batch: Batch, out: Outputs,
                             epoch: int) -> dict[str, Tensor] | None:
        if not self.method.discriminator_step(epoch):
            return None
        d = self.method.discriminator_losses(batch, {k: v[0] for k, v in out.items()}, epoch)
        return None if d is None else {k: v[None] for k, v in d.items()}

    def losses(self, batch: Batch, out: Outputs,
               epoch: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        terms, weights = losses_and_weights(self.method, batch,
                                            {k: v[0] for k, v in out.items()}, epoch)
        return {k: v[None] for k, v in terms.items()}, {k: v[None] for k, v in weights.items()}

    def end_epoch(self, epoch: int) -> list[dict[str, Tensor]]:
        return [self.method.end_epoch(epoch)]

    def predict(self, rows: list[Tensor], batch_size: int, autocast: Any) -> list[dict]:
        return [predict_split(self.method, self.data, rows[0], batch_size, autocast)]

    def zero_grad(self) -> None:
        """Nothing to clear: the optimisers own the gradients."""

    def share_grads(self) -> None:
        """Nothing to share: the gradients are the method's own."""

    def sync(self) -> None:
        """Nothing to copy back: the method's own buffers are live."""

    def restack(self) -> None:
        """Nothing to restack: the method's own buffers are live."""


class _Call(nn.Module):
    """`functional_call` runs `forward`; this dispatches to the method's other calls."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, what: str, *args: Any) -> Any:
        if what == "losses":
            return losses_and_weights(self.method, *args)
        if what in ("forward+discriminators", "forward+losses"):
            # one vmapped call for two of the step's calls; what follows the forward
            # runs as the trainer runs it: on float32 outputs, outside autocast
            batch, epoch = args
            out = {k: v.float() for k, v in self.method(batch).items()}
            with torch.autocast(out["s"].device.type, enabled=False):
                if what == "forward+losses":
                    return out, losses_and_weights(self.method, batch, out, epoch)
                return out, self.method.discriminator_losses(batch, out, epoch)
        return getattr(self.method, what)(*args)


class Stack:
    """M members of one method, same shapes, evaluated together under vmap."""

    def __init__(self, members: list[Method], datas: list[TrainData]) -> None:
        self.members = members
        self.size = len(members)
        self.data = datas[0]  # features are shared; train rows and statistics are the members'
        self.datas = datas
        self.template = members[0]
        self.call = _Call(self.template)
        self.names = [n for n, _ in self.template.named_parameters()]
        # the members' own Parameter objects (resumed before the stack is built)
        self._params = [[m.get_parameter(n) for n in self.names] for m in members]
        # each parameter stacked once, (M, *shape); the members' Parameters become views
        # of its rows, so what their optimisers write is what the next step reads
        with torch.no_grad():
            self.leaves = {n: torch.stack([ps[k] for ps in self._params])
                           for k, n in enumerate(self.names)}
            for k, n in enumerate(self.names):
                for m, ps in enumerate(self._params):
                    ps[k].data = self.leaves[n][m]
        self._ahead: tuple[str, Any] | None = None  # a result computed with the forward
        self.fuse = True  # False: every call on its own (a compiled `losses` must run)
        self.buffer_names = [n for n, _ in self.template.named_buffers()]
        # Shared modules (a teacher holding the student's encoder) are one object
        # reachable by two names: the state below names each tensor ONCE and
        # functional_call does not tie (tying swaps the shared module twice and
        # restores a plain tensor where the Parameter was).
        self.buffers = {n: torch.stack([m.get_buffer(n) for m in members])
                        for n in self.buffer_names}
        # what every vmapped call reads: the same tensors for the stack's life, updated
        # in place (parameters by the optimisers, buffers by `restack`)
        self._state = {f"method.{n}": t for n, t in (*self.leaves.items(),
                                                     *self.buffers.items())}
        self.per_member = self._per_member_options()
        self.restack()  # the members' phase (which parameters take gradients)

    # ------------------------------------------------------------ state
    def zero_grad(self) -> None:
        for t in self.leaves.values():
            t.grad = None

    def share_grads(self) -> None:
        """Each member's gradient: its row of the stacked gradient, as its lone run's (None
        where no gradient came, a frozen teacher's: the optimiser then skips it)."""
        for k, n in enumerate(self.names):
            grad = self.leaves[n].grad
            for m, ps in enumerate(self._params):
                ps[k].grad = None if grad is None else grad[m]

    def sync(self) -> None:
        """Copy the stacked buffers back into each member (before its checkpoint or hooks)."""
        with torch.no_grad():
            for n, b in self.buffers.items():
                for m, member in enumerate(self.members):
                    member.get_buffer(n).copy_(b[m])

    def restack(self) -> None:
        """The members' buffers into the stack, and their phase: a stacked parameter takes
        gradients while the members' own do (after `begin_epoch` froze a teacher, not)."""
        with torch.no_grad():
            for n in self.buffer_names:
                self.buffers[n].copy_(torch.stack([m.get_buffer(n) for m in self.members]))
        for k, n in enumerate(self.names):
            self.leaves[n].requires_grad_(self._params[0][k].requires_grad)

    def _per_member_options(self) -> dict[str, Tensor]:
        """The method's per-member options as (M,) tensors (the rest are shared)."""
        opts = [m.opts for m in self.members]
        keys = [k.split(".", 1)[1] for k in per_member_keys(type(opts[0]), "o")]
        device = self.data.labels.device
        return {k: torch.tensor([float(getattr(o, k)) for o in opts], device=device)
                for k in keys}

    @contextlib.contextmanager
    def _options(self, values: dict[str, Tensor]) -> Iterator[None]:
        """Inside vmap: the template's options with this member's per-member values."""
        ctx = self.template.ctx
        shared = ctx.opts
        ctx.opts = dataclasses.replace(shared, **values)
        try:
            yield
        finally:
            ctx.opts = shared

    def _vmap(self, what: str, batch: dict[str, Any], *args: Any, epoch: int | None = None,
              tap: Tensor | None = None, shared: bool = False) -> Any:
        """vmap `method.<what>(Batch, *args[, epoch])` over the members (args: (M, ...));
        `shared`: one batch (B, ...) read by every member, not theirs (M, B, ...)."""
        student = self.template.student

        def one(state: dict[str, Tensor], hp: dict[str, Tensor], b: dict[str, Any],
                t: Tensor | None, *rest: Any) -> Any:
            student.tap = t
            try:
                with self._options(hp):
                    extra = () if epoch is None else (epoch,)
                    return functional_call(self.call, state,
                                           (what, Batch(**b, teacher_rows=None), *rest, *extra),
                                           tie_weights=False)
            finally:
                student.tap = None

        dims = (0, 0, None if shared else 0, None if tap is None else 0, *[0] * len(args))
        with unrolled_rnns():
            return vmap(one, in_dims=dims, randomness="different")(
                self._state, self.per_member, batch, tap, *args)

    # ------------------------------------------------------------ calls
    def batch(self, idx: Tensor) -> dict[str, Any]:
        """The members' batches as one pytree of (M, B, ...) tensors (vmap's input)."""
        d = self.data

        def take(mods: dict) -> dict:
            return {m: (v.x[idx], v.lengths[idx]) for m, v in mods.items()}

        return {"index": idx, "labels": d.labels[idx], "target": take(d.target),
                "auxiliary": take(d.auxiliary), "aux_present": d.aux_present[idx]}

    def labels(self, batch: dict[str, Any]) -> Tensor:
        return batch["labels"]  # (M, B)

    def aux_present(self, batch: dict[str, Any]) -> Tensor:
        return batch["aux_present"]  # (M, B)

    def forward(self, batch: dict[str, Any], tap: Tensor | None = None,
                epoch: int | None = None) -> Outputs:
        """The members' outputs; with the epoch, the call that follows in the step
        (the discriminators' terms, or else the losses) is computed in the same vmapped
        call and kept for the trainer's next request (fewer calls: each costs a
        parameter swap and a batching set-up whatever the model's size)."""
        self._ahead = None
        if epoch is None or not self.fuse:
            return self._vmap("forward", batch, tap=tap)
        what = ("forward+discriminators" if self.template.discriminator_step(epoch)
                else "forward+losses")
        out, ahead = self._vmap(what, batch, tap=tap, epoch=epoch)
        self._ahead = (what, ahead)
        return out

    def discriminator_losses(self, batch: dict[str, Any], out: Outputs,
                             epoch: int) -> dict[str, Tensor] | None:
        if not self.template.discriminator_step(epoch):  # the epoch decides, for every member
            return None
        if self._ahead is not None and self._ahead[0] == "forward+discriminators":
            return self._ahead[1]
        return self._vmap("discriminator_losses", batch, out, epoch=epoch)

    def losses(self, batch: dict[str, Any], out: Outputs,
               epoch: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        if self._ahead is not None and self._ahead[0] == "forward+losses":
            return self._ahead[1]
        # the discriminators may have stepped since the forward: their rows were updated
        # in place, so the state already holds their new weights
        return self._vmap("losses", batch, out, epoch=epoch)

    def end_epoch(self, epoch: int) -> list[dict[str, Tensor]]:
        """Each member's own hook on its own buffers (w_f, w_e...), then restacked."""
        self.sync()
        extras = [m.end_epoch(epoch) for m in self.members]
        self.restack()
        return extras

    def predict(self, rows: list[Tensor], batch_size: int, autocast: Any) -> list[dict]:
        """Every member's eval-mode predictions on its rows, as `predict_split` gives them.

        Members that score the same rows (a shared validation split: the usual case) run
        together under vmap, each chunk of rows gathered once for all; a chunk holds
        `batch_size // M` rows, so a stacked chunk is no larger than a lone run's. Members
        with rows of their own (training subsets) run one by one through their modules.
        """
        if any(not torch.equal(r, rows[0]) for r in rows[1:]):
            self.sync()
            return [predict_split(m, d, r, batch_size, autocast)
                    for m, d, r in zip(self.members, self.datas, rows, strict=True)]
        d, shared = self.data, rows[0]
        chunks = predict_chunks(  # the template's modes are what the vmapped calls read
            self.template, lambda batch: self._vmap("predict", batch, shared=True),
            self.batch, shared, max(1, batch_size // self.size), autocast,
            weights=self.leaves.values())  # what the vmapped calls read
        # role -> (emb (M, b, d), logits (M, b, C)) per chunk; each member its row
        return [as_split([{role: (e[m], lg[m]) for role, (e, lg) in c.items()} for c in chunks],
                         d.labels[shared], d.aux_present[shared]) for m in range(self.size)]
