"""How the trainer calls the methods: one run (`Lone`) or M stacked members (`Stack`).

Both engines take the same calls, and every tensor they return has a leading
member dimension M (M = 1 for a lone run):

    step = engine.forward(idx, epoch, tap, autocast)  # idx (M, B) rows -> Step
    step.out                                          # {name: (M, B, ...)}, float32
    step.disc                                         # {name: (M,)}, or None: no discriminator step
    terms, weights = engine.losses(step, epoch)       # {name: (M,)}, {name: (M,)}
    preds = engine.predict(rows, batch_size, autocast)  # per member, as predictions.predict_split

`tap` (M, B, d), when given, is a zero added to the student encoder's output for
that forward only (`tapped`; `epoch_stats.term_gradients`). `Lone` calls the
method directly (fused RNN kernels, cuDNN on a GPU).

`Stack` evaluates the SAME `Method` calls for every member at once with
`torch.func.vmap` over `functional_call`: there is no second copy of any loss.
Each member keeps its own optimisers, checkpoint and run folder, its parameters
views of the rows of the stacked ones (`Stack.__init__`); buffers live stacked
too, copied back at `sync`. Options marked `per_member` enter each vmapped call
as (M,) tensors, read through `Stack.view`: the members' options never change.

What vmap needs: RNNs given vmapped weights run their cell equations
(`models.run_rnn`); random ops draw per member (`randomness="different"`), so
with dropout a stacked member is an equally valid sample of its configuration
but not its lone run's bit-for-bit twin (with dropout 0 it is, within float
rounding); a method that reads auxiliary modalities needs every sample to have
them (row selection would give members different shapes).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from amid.distill.data import Batch, TrainData
from amid.distill.methods.base import Method, Outputs
from amid.distill.predictions import as_split, predict_chunks, predict_split
from amid.schema import per_member_keys

Tensor = torch.Tensor
Terms = dict[str, Tensor]
NO_AUTOCAST = contextlib.nullcontext()


@dataclass
class Step:
    """One batch through every member: its outputs and what was computed with them."""

    batch: Batch  # the members' inputs: (B, ...) for a lone run, (M, B, ...) for a stack
    out: Outputs  # name -> (M, B, ...), float32
    disc: Terms | None = None  # the discriminators' terms (M,) when this epoch trains them
    terms: tuple[Terms, Terms] | None = None  # (terms, weights), when computed with `out`


def losses_and_weights(method: Method, batch: Batch, out: Outputs,
                       epoch: int) -> tuple[Terms, Terms]:
    """The method's named terms and their weights, every weight (float or 0-d tensor) a
    tensor like the terms, for stacking."""
    terms = method.losses(batch, out, epoch)
    like = next(iter(terms.values()))
    return terms, {k: torch.as_tensor(w, dtype=like.dtype, device=like.device)
                   for k, w in method.weights(epoch).items()}


def tapped(encoder: nn.Module, tap: Tensor | None) -> AbstractContextManager:
    """Within the block, `encoder`'s output plus `tap` (a zero: same values, and its
    gradient is the one every use of the output sends back). Nothing when tap is None."""
    if tap is None:
        return contextlib.nullcontext()
    return encoder.register_forward_hook(lambda _module, _inputs, s: s + tap)  # removed on exit


def forward_and_then(method: Method, batch: Batch, epoch: int) -> tuple[Outputs, Any]:
    """The forward (under the caller's autocast), then the call that follows it: the
    discriminators' terms in an epoch that trains them, else the loss terms, on float32
    outputs outside autocast, as the trainer runs it."""
    out = {k: v.float() for k, v in method(batch).items()}
    with torch.autocast(out["s"].device.type, enabled=False):
        if method.discriminator_step(epoch):
            return out, method.discriminator_losses(batch, out, epoch)
        return out, losses_and_weights(method, batch, out, epoch)


class Lone:
    """One run: the method's own calls, results given a member dimension of 1."""

    def __init__(self, method: Method, data: TrainData) -> None:
        self.method = method
        self.data = data

    def forward(self, idx: Tensor, epoch: int, tap: Tensor | None = None,
                autocast: AbstractContextManager = NO_AUTOCAST) -> Step:
        batch = self.data.batch(idx[0])  # (B, ...)
        method = self.method
        with autocast, tapped(method.student.encoder, None if tap is None else tap[0]):
            out, then = forward_and_then(method, batch, epoch)  # s (B, d), logits_s (B, C), ...
        if method.discriminator_step(epoch):
            return Step(batch, _one(out), disc=None if then is None else _one(then))
        return Step(batch, _one(out), terms=(_one(then[0]), _one(then[1])))

    def losses(self, step: Step, epoch: int) -> tuple[Terms, Terms]:
        if step.terms is not None:
            return step.terms
        out = {k: v[0] for k, v in step.out.items()}  # (B, ...)
        terms, weights = losses_and_weights(self.method, step.batch, out, epoch)
        return _one(terms), _one(weights)

    def end_epoch(self, epoch: int) -> list[dict[str, Tensor]]:
        return [self.method.end_epoch(epoch)]

    def predict(self, rows: list[Tensor], batch_size: int,
                autocast: AbstractContextManager | None) -> list[dict]:
        return [predict_split(self.method, self.data, rows[0], batch_size, autocast)]

    def sync(self) -> None:
        """Nothing to do (nor for `zero_grad`, `share_grads`, `restack`): the method's own
        buffers are live, its gradients its optimisers' own."""

    zero_grad = share_grads = restack = sync


def _one(d: dict[str, Tensor]) -> dict[str, Tensor]:
    """A lone run's results with a member dimension of 1 in front."""
    return {k: v[None] for k, v in d.items()}


class _Call(nn.Module):
    """What `functional_call` runs: `fn(method, *args)`, with the tensors it is given."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.method, *args)


def _fields(batch: Batch) -> dict[str, Any]:
    """A stacked batch as the pytree vmap maps over (every row has every modality)."""
    return {"index": batch.index, "labels": batch.labels, "target": batch.target,
            "auxiliary": batch.auxiliary, "aux_present": batch.aux_present}


class Stack:
    """M members of one method, same shapes, evaluated together under vmap.

    `fuse` (True unless the losses are compiled): the forward computes the call that
    follows it in the same vmapped call (each costs a parameter swap and a batching
    set-up whatever the model's size); `losses_call` computes the terms when it did
    not (`compile_stack` swaps in a compiled one).
    """

    def __init__(self, members: list[Method], datas: list[TrainData]) -> None:
        self.members = members
        self.size = len(members)
        self.data = datas[0]  # features are shared; train rows and statistics are the members'
        self.datas = datas
        self.template = members[0]
        # what the vmapped calls run: a shallow copy of the template (the same modules,
        # whose tensors `functional_call` swaps for the members') with options of its
        # own, which each call sets to its member's values; built here, where
        # torch.compile need not trace it. A method's attributes are set in __init__
        # (state lives in modules and buffers), so the copy's are the template's.
        self.view = copy.copy(self.template)
        self.options = copy.copy(self.template.opts)  # the view's own, never a member's
        self.view.ctx = dataclasses.replace(self.template.ctx, opts=self.options)
        self.call = _Call(self.view)
        self.names = [n for n, _ in self.template.named_parameters()]
        # the members' own Parameter objects (resumed before the stack is built)
        self._params = [[m.get_parameter(n) for n in self.names] for m in members]
        # each parameter stacked once, (M, *shape), for the stack's life; the members'
        # Parameters become views of its rows, so what their optimisers write in place
        # is what the next vmapped call reads, with no copy per step
        self.leaves: dict[str, Tensor] = {}
        with torch.no_grad():
            for k, n in enumerate(self.names):
                self.leaves[n] = torch.stack([ps[k] for ps in self._params])
                for m, ps in enumerate(self._params):
                    ps[k].data = self.leaves[n][m]
        self.fuse = True
        self.losses_call: Callable[[Batch, Outputs, int], tuple[Terms, Terms]] = \
            self.vmapped_losses
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
        self.per_member = self._per_member_options()  # (M,) each, read through `view`
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

    def _vmap(self, fn: Callable[..., Any], batch: Batch, *args: Any,
              tap: Tensor | None = None, shared: bool = False) -> Any:
        """`fn(method, batch, *args)` for every member at once (args: (M, ...)), `method`
        holding that member's parameters, buffers and options; `tap` (M, B, d) as in
        `tapped`; `shared`: one batch (B, ...) read by every member, not (M, B, ...)."""
        def one(state: dict[str, Tensor], values: dict[str, Tensor], fields: dict[str, Any],
                t: Tensor | None, *rest: Any) -> Any:
            # this call's member's option values into the view's options for the call, the
            # shared ones back after; set without validation (they are tensors) and with no
            # copy (torch.compile cannot trace one)
            shared = {k: getattr(self.options, k) for k in values}
            for k, v in values.items():
                object.__setattr__(self.options, k, v)
            try:
                with tapped(self.view.student.encoder, t):
                    return functional_call(self.call, state, (fn, Batch(**fields), *rest),
                                           tie_weights=False)
            finally:
                for k, v in shared.items():
                    object.__setattr__(self.options, k, v)

        dims = (0, 0, None if shared else 0, None if tap is None else 0, *[0] * len(args))
        return vmap(one, in_dims=dims, randomness="different")(
            self._state, self.per_member, _fields(batch), tap, *args)

    # ------------------------------------------------------------ calls
    def forward(self, idx: Tensor, epoch: int, tap: Tensor | None = None,
                autocast: AbstractContextManager = NO_AUTOCAST) -> Step:
        batch = self.data.batch(idx, pair_rows=False)  # (M, B) rows -> tensors (M, B, ...)
        disc_epoch = self.template.discriminator_step(epoch)  # the epoch decides, for all
        if self.fuse:
            with autocast:
                out, then = self._vmap(lambda m, b: forward_and_then(m, b, epoch), batch,
                                       tap=tap)
            return Step(batch, out, disc=then, terms=None) if disc_epoch \
                else Step(batch, out, terms=then)
        with autocast:
            raw = self._vmap(lambda m, b: m(b), batch, tap=tap)
        out = {k: v.float() for k, v in raw.items()}
        disc = self._vmap(lambda m, b, o: m.discriminator_losses(b, o, epoch), batch, out) \
            if disc_epoch else None
        return Step(batch, out, disc=disc)

    def losses(self, step: Step, epoch: int) -> tuple[Terms, Terms]:
        # the discriminators may have stepped since the forward: their rows were updated
        # in place, so the state already holds their new weights
        return step.terms if step.terms is not None \
            else self.losses_call(step.batch, step.out, epoch)

    def vmapped_losses(self, batch: Batch, out: Outputs, epoch: int) -> tuple[Terms, Terms]:
        return self._vmap(lambda m, b, o: losses_and_weights(m, b, o, epoch), batch, out)

    def end_epoch(self, epoch: int) -> list[dict[str, Tensor]]:
        """Each member's own hook on its own buffers (w_f, w_e...), then restacked."""
        self.sync()
        extras = [m.end_epoch(epoch) for m in self.members]
        self.restack()
        return extras

    def predict(self, rows: list[Tensor], batch_size: int,
                autocast: AbstractContextManager | None) -> list[dict]:
        """Every member's eval-mode predictions on its rows, as `predict_split` gives them.

        Members scoring the same rows (the usual case) run together under vmap, in chunks
        of `batch_size // M` rows (no larger than a lone run's); members with rows of
        their own (training subsets) run one by one through their modules.
        """
        if any(not torch.equal(r, rows[0]) for r in rows[1:]):
            self.sync()
            return [predict_split(m, d, r, batch_size, autocast)
                    for m, d, r in zip(self.members, self.datas, rows, strict=True)]
        d, shared = self.data, rows[0]
        chunks = predict_chunks(  # the template's modes are what the vmapped calls read
            self.template, lambda batch: self._vmap(lambda m, b: m.predict(b), batch,
                                                    shared=True),
            partial(self.data.batch, pair_rows=False), shared, max(1, batch_size // self.size),
            autocast,
            weights=self.leaves.values())  # what the vmapped calls read
        # role -> (emb (M, b, d), logits (M, b, C)) per chunk; each member its row
        return [as_split([{role: (e[m], lg[m]) for role, (e, lg) in c.items()} for c in chunks],
                         d.labels[shared], d.aux_present[shared]) for m in range(self.size)]
