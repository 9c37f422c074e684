"""The training loop of `amid-train`: one method, one run folder per member, resumable.

Reads top to bottom: device and data; per member its seed, training rows,
method and optimisers; resume; then per epoch: seeded permutations, batches
as index slices, one forward per batch, the discriminator step (when the
method has one that epoch) before the networks' step, the weighted sum of the
method's named terms, metrics kept as device tensors (one host sync per
epoch), evaluation, checkpoint, log. At the end each member's modules go out
as safetensors + JSON and the predictions of the LAST epoch as `outputs.h5`
(test data is never used to pick anything).

A plain run is a stack of one (`stack.Lone`: the method's own calls); a
sweep trains M members that differ only in per-member values in the same
loop (`stack.Stack`: the same calls under vmap). Each member keeps its own
optimisers, batch order, checkpoint and run folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amid.config import Config
from amid.devices import amp_allowed, keep_large_blocks_in_heap
from amid.devices import resolve_device as _resolve
from amid.distill import diagnostics
from amid.distill.checkpoint import (
    load_checkpoint,
    own_storage,
    remove_strays,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from amid.distill.data import TrainData, load_data
from amid.distill.epoch_stats import EpochSums, TrainingHits
from amid.distill.methods import (
    Method,
    MethodContext,
    method_options,
    weighted_total,
)
from amid.distill.methods.base import method_class, method_record
from amid.distill.predictions import finish_run, split_metrics
from amid.distill.runlog import log_epoch, open_live, run_header
from amid.distill.stack import Lone, Stack
from amid.distill.subsample import train_rows_for
from amid.errors import AmidError, CheckpointError
from amid.faults import fault_point
from amid.locking import ExclusiveLock
from amid.storage import write_json
from amid.typed import to_dict

log = logging.getLogger("amid.distill")

SAVE_EVERY_S = 30.0  # a stack's members checkpoint at most this often (and at the end)
clock = time.monotonic  # tests replace it to check the interval


def resolve_device(name: str) -> torch.device:
    """`train.device` as a torch device (see `amid.devices.resolve_device`)."""
    return _resolve(name, "train.device")


def mixed_precision(device: torch.device, amp: bool) -> tuple[bool, Any]:
    """(in use?, the context every forward runs in): bf16 autocast when `train.amp` asks."""
    if amp and amp_allowed(device):
        return True, torch.autocast(device.type, dtype=torch.bfloat16)
    return False, contextlib.nullcontext()


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and random; the returned generator draws the batch order."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_from_config(cfg: Config, device: torch.device) -> TrainData:
    """The caches `cfg` names, loaded onto `device`, each checked against `extract.<m>`."""
    from amid.distill.provenance import check_cache_identities

    ds = cfg.dataset
    extractors = {m: cfg.extract[m].extractor for m in [*ds.target, *ds.auxiliary]}
    data = load_data(ds.manifest, ds.root, ds.cache_dir, ds.name, ds.target, ds.auxiliary,
                     extractors, fold=ds.fold, device=device, max_steps=cfg.train.max_steps)
    check_cache_identities(data, cfg)
    return data


def run_config(cfg: Config, method: str) -> dict[str, Any]:
    """What a run was made from: dataset, extraction, training, and ITS method's options
    (resolved: `preset` where the method has presets, and `method`, the registered
    method trained, which differs from the name for a variant)."""
    d = to_dict(cfg)
    return {"dataset": d["dataset"], "extract": d["extract"], "train": d["train"],
            "methods": {method: method_record(method, cfg.methods.get(method))}}


@dataclass
class Member:
    """One run of the loop: configuration, folder, and its training state."""

    cfg: Config
    run: Path
    data: TrainData | None = None  # the member's view: its training rows and statistics
    method: Method | None = None
    opt: torch.optim.Optimizer | None = None
    disc_opt: torch.optim.Optimizer | None = None
    generator: torch.Generator | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    live: Any = None

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoint.pt"


def train(method_name: str, cfg: Config, run: str | Path, *, data: TrainData | None = None,
          live: bool = True) -> list[dict[str, float]]:
    """Train `method_name` into folder `run`, resuming from `run/checkpoint.pt` if present.

    Returns the per-epoch metric history. `data` may be passed to reuse loaded
    caches (tests, several runs in one process); it must be on the device.
    """
    (member,) = train_members(method_name, [cfg], [Path(run)], data=data, live=live,
                              stacked=False)
    return member.history


def train_members(method_name: str, cfgs: list[Config], runs: list[Path], *,
                  data: TrainData | None = None, live: bool = True,
                  stacked: bool = True) -> list[Member]:
    """Train every (config, run folder) pair; together as a stack when `stacked`.

    One trainer per run folder: a folder being trained by another process is
    refused. In a stack, a member whose loss turns NaN stops (its `error`
    says why) and the others go on; a lone run raises instead.
    """
    with contextlib.ExitStack() as locks:
        for run in runs:
            try:
                run.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AmidError(f"cannot create the run folder {run}: {exc.strerror}") from None
            locks.enter_context(ExclusiveLock(run / ".lock", AmidError(
                f"{run} is being trained by another amid-train (lock {run / '.lock'}); wait "
                "for it or choose another --out")))
        return _train(method_name, [Member(c, r) for c, r in zip(cfgs, runs, strict=True)],
                      data, live, stacked)


def _train(name: str, members: list[Member], data: TrainData | None, live: bool,
           stacked: bool) -> list[Member]:
    tc = members[0].cfg.train
    # ---------------------------------------------------------------- setup
    device = resolve_device(tc.device)
    if device.type == "cpu":
        keep_large_blocks_in_heap()  # large batches reused, not faulted in afresh
    if data is None:
        data = data_from_config(members[0].cfg, device)
    use_amp, autocast = mixed_precision(device, tc.amp)
    for mb in members:  # each member built as its lone run would be: same seed, same init
        mb.generator = seed_everything(mb.cfg.train.seed)
        subset = train_rows_for(data, mb.cfg)  # dataset.train_per_class / train_fraction
        mb.data = data if subset is None else data.with_train_rows(subset)
        opts = method_options(name, mb.cfg.methods.get(name))
        ctx = MethodContext(mb.data, mb.cfg.train.model, opts, mb.cfg.train.epochs, name)
        mb.method = method_class(name, mb.cfg.methods.get(name))(ctx).to(device)
        # fused: one kernel per parameter for the whole update (CPU and GPU), where
        # PyTorch's default on the CPU loops in Python; several times faster, same rule
        mb.opt = torch.optim.AdamW(mb.method.network_parameters(), lr=mb.cfg.train.lr,
                                   weight_decay=mb.cfg.train.weight_decay, fused=True)
        if mb.method.discriminators is not None:
            mb.disc_opt = torch.optim.Adam(mb.method.discriminators.parameters(),
                                           lr=mb.cfg.train.disc_lr, betas=(0.5, 0.999),
                                           fused=True)
        mb.config = run_config(mb.cfg, name)
    if tc.compile and not stacked:  # forward + losses compiled, eager fallback
        from amid.distill.compiled import compile_method

        compile_method(members[0].method, device)
    # ---------------------------------------------------------------- resume
    start = _resume(name, members)
    for mb in members:  # written only now: a refused resume must not overwrite it
        write_json(mb.run / "config.json",
                   {"method": name, "config": mb.config, "inputs": mb.data.inputs})
        # a lone run logs each epoch as it ends; a stack's members write their whole
        # history at the end (dvclive's files per epoch and member cost more than the step)
        mb.live = open_live(mb.run, mb.history) if live and not stacked else None
    engine = Stack([m.method for m in members], [m.data for m in members]) if stacked \
        else Lone(members[0].method, members[0].data)
    if tc.compile and stacked:  # the stack's vmapped forward + losses, eager fallback
        from amid.distill.compiled import compile_stack

        compile_stack(engine, device)
    rows = torch.stack([mb.data.splits["train"] for mb in members])  # (M, n)
    n, bs = int(rows.shape[1]), tc.batch_size
    if bs > n:  # clamped, not an error: a small dataset (or fold) is still trainable
        log.warning("train.batch_size %d > %d training samples: one batch of %d per epoch",
                    bs, n, n)
    n_used = n - 1 if n % bs == 1 and n > 1 else n  # a last batch of one has no pairs
    log.info("%s", run_header(name, members, device, use_amp, start))
    last_save, t_start = clock(), time.monotonic()
    # ---------------------------------------------------------------- epochs
    for epoch in range(start, tc.epochs):
        for mb in members:
            mb.method.begin_epoch(epoch)  # phases: freeze a fixed teacher, reset sums
            mb.method.train()
        engine.restack()
        perm = torch.stack([torch.randperm(n, generator=mb.generator)
                            for mb in members]).to(device)  # (M, n)
        sums = EpochSums()  # per-term sums (M, K) and first non-finite batches, on the device
        hits = TrainingHits()  # right answers on the training batches, as they trained
        for b, lo in enumerate(range(0, n_used, bs)):
            idx = torch.gather(rows, 1, perm[:, lo:lo + bs])  # (M, B)
            batch = engine.batch(idx)
            # first batch: a zero added to s, whose gradient is what each term sends into E_S
            tap = torch.zeros(*idx.shape, tc.model.dim, device=device, requires_grad=True) \
                if b == 0 else None
            with autocast:
                out = engine.forward(batch, tap, epoch)  # s, t, a: (M, B, d); logits_*: (M, B, C)
            out = {k: v.float() for k, v in out.items()}
            terms: dict[str, torch.Tensor] = {}  # name -> (M,)
            d = engine.discriminator_losses(batch, out, epoch)  # t, s detached inside
            if d is not None:
                _step(engine, [mb.disc_opt for mb in members], d["total"].sum())
                terms |= {k if k.startswith("disc") else f"disc_{k}": v for k, v in d.items()}
            parts, weights = engine.losses(batch, out, epoch)  # (M,) each
            total = weighted_total(parts, weights)  # (M,)
            terms |= {f"loss_{k}": v for k, v in parts.items()} | {"loss_total": total}
            if b == 0:  # on the epoch's first batch: one extra backward per term
                grads = diagnostics.term_gradients(parts, weights, tap)  # grad_<term>: (M,)
            _step(engine, [mb.opt for mb in members], total.sum())
            sums.add(terms, b)
            hits.add(engine.labels(batch), engine.aux_present(batch), out)
        n_batches = b + 1
        # ------------------------------------------------ end of epoch: the one sync
        extras = engine.end_epoch(epoch)  # e.g. w_f, w_e, per member
        # eval mode on validation (the training split only when there is no validation
        # split: gap and cosine need one); training accuracy came from its batches
        scored = ("val",) if "val" in data.splits else ("train",)
        preds = {s: engine.predict([mb.data.splits[s] for mb in members], tc.eval_batch_size,
                                   autocast if use_amp else None) for s in scored}
        means = sums.means(n_batches) | grads | hits.accuracies()  # name -> (M,)
        scalars = [{**{k: v[m] for k, v in means.items()},
                    **split_metrics({s: p[m] for s, p in preds.items()}), **extras[m]}
                   for m in range(len(members))]
        values = torch.stack([torch.stack([v.float().reshape(()) for v in s.values()])
                              for s in scalars]).tolist()
        bad = sums.first_bad()  # name -> [first non-finite batch per member, or -1]
        for m, mb in enumerate(members):
            if mb.error is not None:
                continue
            _check_finite(mb, {k: v[m] for k, v in bad.items()}, epoch, stacked)
            if mb.error is not None:
                continue
            row = {"epoch": epoch, **dict(zip(scalars[m], values[m], strict=True))}
            mb.history.append(row)
            mb.method.after_validation(epoch, row)
            if mb.live is not None:
                log_epoch(mb.live, row)
        elapsed = time.monotonic() - t_start
        done = epoch + 1 - start
        log.info("%s epoch %d/%d: %s (%.2f s/epoch, ETA %s)", name, epoch + 1, tc.epochs,
                 _short(members[0].history[-1] if members[0].history else {}), elapsed / done,
                 _eta(elapsed / done * (tc.epochs - epoch - 1)))
        if all(mb.error is not None for mb in members):
            break
        if not stacked or epoch + 1 == tc.epochs or clock() - last_save >= SAVE_EVERY_S:
            engine.sync()
            for mb in members:
                if mb.error is None:
                    save_checkpoint(mb.ckpt, checkpoint_state(mb, name, epoch + 1))
            last_save = clock()
            fault_point("epoch-saved")  # crash tests: between two epochs
    # ---------------------------------------------------------------- finish
    engine.sync()
    for mb in members:
        if live and stacked:
            mb.live = open_live(mb.run, mb.history)
        if mb.live is not None:
            mb.live.end()
        if mb.error is None:
            finish_run(mb.method, name, mb.data, mb.cfg, mb.run)
    return members


def _step(engine: Lone | Stack, optimisers: list[torch.optim.Optimizer | None],
          loss: torch.Tensor) -> None:
    """One optimiser step per member on the sum of the members' (independent) losses."""
    for o in optimisers:
        o.zero_grad(set_to_none=True)
    engine.zero_grad()
    loss.backward()
    engine.share_grads()  # a stack's gradient lands stacked: each member gets its row
    for o in optimisers:
        o.step()


def _resume(name: str, members: list[Member]) -> int:
    """Load each member's checkpoint; every member must have reached the same epoch."""
    epochs = []
    for mb in members:
        remove_strays(mb.run)  # temporaries of a killed run
        if not mb.ckpt.exists():
            epochs.append(0)
            continue
        ckpt = load_checkpoint(mb.ckpt, name, mb.config, mb.data.inputs)
        if int(ckpt["epoch"]) > mb.cfg.train.epochs:  # its weights are not a run this long
            raise CheckpointError(
                f"{mb.run} holds a run of {ckpt['epoch']} epochs, more than train.epochs "
                f"{mb.cfg.train.epochs}: use another --out folder (or delete {mb.ckpt} to "
                "train this one again)")
        mb.method.load_state_dict(ckpt["method_state"])
        mb.opt.load_state_dict(ckpt["optimizer"])
        if mb.disc_opt is not None:
            mb.disc_opt.load_state_dict(ckpt["disc_optimizer"])
        set_rng_state(ckpt["rng"], mb.generator)
        mb.history = ckpt["history"]
        epochs.append(int(ckpt["epoch"]))
        log.info("resuming %s in %s after epoch %d", name, mb.run, ckpt["epoch"])
    if len(set(epochs)) > 1:
        raise AmidError(f"the members of this stack stopped after different epochs "
                        f"({dict(zip((str(m.run) for m in members), epochs, strict=True))}); "
                        "they are resumed one by one by amid-train --sweep")
    if len(members) > 1 and epochs[0]:  # the stack's shared dropout stream: member 0's
        set_rng_state(load_checkpoint(members[0].ckpt, name, members[0].config)["rng"],
                      members[0].generator)
    return epochs[0]


def checkpoint_state(mb: Member, name: str, epoch: int) -> dict[str, Any]:
    return {
        "method": name,
        "epoch": epoch,
        "history": mb.history,
        "config": mb.config,
        "inputs": mb.data.inputs,
        "method_state": own_storage(mb.method.state_dict()),
        "optimizer": mb.opt.state_dict(),
        "disc_optimizer": mb.disc_opt.state_dict() if mb.disc_opt is not None else None,
        "rng": rng_state(mb.generator),
    }


def _check_finite(mb: Member, first_bad: dict[str, int], epoch: int, stacked: bool) -> None:
    """Stop a member whose loss turned NaN/inf: raise for a lone run, mark it in a stack."""
    hits = [(b, k != "loss_total", k) for k, b in first_bad.items() if b >= 0]
    if not hits:
        return
    b, _, key = min(hits, key=lambda h: (h[0], not h[1]))
    kept = f"the last good checkpoint {mb.ckpt} is kept" if mb.ckpt.exists() \
        else "no checkpoint yet"
    message = (f"loss term {key!r} became NaN or infinite in epoch {epoch} (batch {b}); "
               f"training stopped, {kept}. Try a smaller train.lr or check the features.")
    if not stacked:
        raise AmidError(message)
    mb.error = message
    log.warning("sweep member %s stopped: %s", mb.run, message)


def _short(row: dict[str, float]) -> str:
    keys = [k for k in ("loss_total", "val_acc_student", "val_acc_teacher") if k in row]
    return ", ".join(f"{k}={row[k]:.4f}" for k in keys)


def _eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes else f"{sec} s"
