"""The training loop of `amid-train`: one method, one run folder per member, resumable.

`_train` reads top to bottom: setup (device, data, each run built by
`runstate.build_run`, resume, the engine), then per epoch `_train_epoch`,
`_evaluate` (the epoch's one host sync), `_record` and `_save`; at the end each
run's modules and the LAST epoch's predictions (`predictions.finish_run`: test
data is never used to pick anything).

Shapes carry a leading member dimension M: a plain run is M = 1 (`stack.Lone`);
a sweep's stack trains M members that differ only in per-member values
(`stack.Stack`), each with its own optimisers, batch order, checkpoint and run
folder (why the configuration, not the machine's speed, decides: `train_members`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch

from amid.cli import duration
from amid.config import Config
from amid.devices import amp_allowed, keep_large_blocks_in_heap
from amid.devices import resolve_device as _resolve
from amid.distill import compiled
from amid.distill.checkpoint import save_checkpoint
from amid.distill.data import TrainData, data_from_config
from amid.distill.epoch_stats import EpochSums, TrainingHits, term_gradients
from amid.distill.methods import weighted_total
from amid.distill.predictions import finish_run, split_metrics
from amid.distill.runlog import log_epoch, open_live, run_header
from amid.distill.runstate import (  # seed_everything: the trainer's seeding, for callers
    RunState,
    build_run,
    checkpoint_state,
    resume,
    seed_everything,  # noqa: F401
)
from amid.distill.stack import Lone, Stack
from amid.errors import AmidError
from amid.faults import fault_point
from amid.locking import ExclusiveLock
from amid.storage import write_json

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


def train(method_name: str, cfg: Config, run: str | Path, *, data: TrainData | None = None,
          live: bool = True) -> list[dict[str, float]]:
    """Train `method_name` into folder `run`, resuming from `run/checkpoint.pt` if present;
    the per-epoch metric history. `data`: caches already loaded onto the device."""
    (state,) = train_members(method_name, [cfg], [Path(run)], data=data, live=live,
                             stacked=False)
    return state.history


def train_members(method_name: str, cfgs: list[Config], runs: list[Path], *,
                  data: TrainData | None = None, live: bool = True,
                  stacked: bool = True) -> list[RunState]:
    """Train every (config, run folder) pair; together as a stack when `stacked`.

    A folder being trained by another process is refused. In a stack, a member whose
    loss turns NaN stops (its `error` says why) and the others go on; a lone run raises.

    Stacked or not is the caller's choice (`sweep.py`: stacked when the shapes allow),
    not picked by speed: the two give different numbers (dropout and RNNs under vmap),
    and a choice by timing would make results depend on the machine and its load.
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
        return _train(method_name, [RunState(c, r) for c, r in zip(cfgs, runs, strict=True)],
                      data, live, stacked)


def _train(name: str, runs: list[RunState], data: TrainData | None, live: bool,
           stacked: bool) -> list[RunState]:
    tc = runs[0].cfg.train  # the members differ in per-member values only
    # ---------------------------------------------------------------- setup
    device = resolve_device(tc.device)
    if device.type == "cpu":
        keep_large_blocks_in_heap()  # large batches reused, not faulted in afresh
        if tc.threads:
            torch.set_num_threads(tc.threads)
    data = data if data is not None else data_from_config(runs[0].cfg, device)
    use_amp, autocast = mixed_precision(device, tc.amp)
    for rs in runs:  # each member built as its lone run would be: same seed, same init
        build_run(rs, name, data, device)
    start = resume(name, runs)
    for rs in runs:  # written only now: a refused resume must not overwrite it
        write_json(rs.run / "config.json",
                   {"method": name, "config": rs.config, "inputs": rs.data.inputs})
        # a lone run logs each epoch as it ends; a stack's members write their whole
        # history at the end (a file per metric, epoch and member costs more than the step)
        rs.live = open_live(rs.run, rs.history) if live and not stacked else None
    engine = _engine(runs, stacked, tc.compile, device)  # built on the resumed weights
    rows = torch.stack([rs.data.splits["train"] for rs in runs])  # (M, n) training rows
    starts = _batch_starts(int(rows.shape[1]), tc.batch_size)  # each batch's first position
    log.info("%s", run_header(name, runs, device, use_amp, start))
    last_save, t_start = clock(), time.monotonic()
    # ---------------------------------------------------------------- epochs
    for epoch in range(start, tc.epochs):
        means, bad = _train_epoch(engine, runs, rows, starts, epoch, autocast)  # (M,) each
        logged = _evaluate(engine, runs, epoch, means, autocast if use_amp else None)
        _record(engine, runs, logged, bad, epoch, stacked)
        _log_progress(name, runs, epoch, start, time.monotonic() - t_start)
        if all(rs.error is not None for rs in runs):
            break
        if not stacked or epoch + 1 == tc.epochs or clock() - last_save >= SAVE_EVERY_S:
            _save(engine, runs, name, epoch + 1)
            last_save = clock()
    # ---------------------------------------------------------------- finish
    engine.sync()  # the stacked buffers back into each member
    for rs in runs:
        if live and stacked:
            rs.live = open_live(rs.run, rs.history)
        if rs.error is None:
            finish_run(rs.method, name, rs.data, rs.cfg, rs.run)
    return runs


def _engine(runs: list[RunState], stacked: bool, compile_: bool,
            device: torch.device) -> Lone | Stack:
    """The lone run's own calls, or the members' stack; with `train.compile`, the
    forward and loss terms compiled (eager fallback)."""
    if not stacked:
        if compile_:
            compiled.compile_method(runs[0].method, device)
        return Lone(runs[0].method, runs[0].data)
    engine = Stack([rs.method for rs in runs], [rs.data for rs in runs])
    if compile_:
        compiled.compile_stack(engine, device)
    return engine


def _batch_starts(n: int, bs: int) -> range:
    """Where each batch of an epoch starts in the shuffled rows (its step: the batch size)."""
    if bs > n:  # clamped, not an error: a small dataset (or fold) is still trainable
        log.warning("train.batch_size %d > %d training samples: one batch of %d per epoch",
                    bs, n, n)
    n_used = n - 1 if n % bs == 1 and n > 1 else n  # a last batch of one has no pairs
    return range(0, n_used, bs)


def _train_epoch(engine: Lone | Stack, runs: list[RunState], rows: torch.Tensor,
                 starts: range, epoch: int,
                 autocast: Any) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """One pass over the training rows (M, n), each member in its own order: per batch
    the discriminators' step (in an epoch that trains them), then the networks' step.
    Returns name -> (M,): each term's mean and gradient norm at s (first batch), the
    training accuracies; and each term's first non-finite batch per member (-1: none).
    """
    for rs in runs:
        rs.method.begin_epoch(epoch)  # phases: freeze a fixed teacher, reset sums
        rs.method.train()
    engine.restack()
    data, dim = runs[0].data, runs[0].cfg.train.model.dim
    perm = torch.stack([torch.randperm(rows.shape[1], generator=rs.generator)
                        for rs in runs]).to(rows.device)  # (M, n)
    sums = EpochSums()  # per-term sums (M, K) and first non-finite batches, on the device
    hits = TrainingHits()  # right answers on the training batches, as they trained
    for b, lo in enumerate(starts):
        idx = torch.gather(rows, 1, perm[:, lo:lo + starts.step])  # (M, B)
        # first batch: a zero added to s, whose gradient is what each term sends into E_S
        tap = torch.zeros(*idx.shape, dim, device=rows.device, requires_grad=True) \
            if b == 0 else None
        step = engine.forward(idx, epoch, tap, autocast)  # s, t, a (M, B, d); logits (M, B, C)
        terms: dict[str, torch.Tensor] = {}  # name -> (M,)
        if step.disc is not None:  # the discriminators first, on t and s detached
            _step(engine, [rs.disc_opt for rs in runs], step.disc["total"].sum())
            terms |= {k if k.startswith("disc") else f"disc_{k}": v for k, v in step.disc.items()}
        parts, weights = engine.losses(step, epoch)  # (M,) each
        total = weighted_total(parts, weights)  # (M,)
        terms |= {f"loss_{k}": v for k, v in parts.items()} | {"loss_total": total}
        if b == 0:  # on the epoch's first batch: one extra backward per term
            grads = term_gradients(parts, weights, tap)  # grad_<term>: (M,)
        _step(engine, [rs.opt for rs in runs], total.sum())
        sums.add(terms, b)
        hits.add(data.labels[idx], data.aux_present[idx], step.out)  # labels (M, B)
    return sums.means(b + 1) | grads | hits.accuracies(), sums.first_bad()


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


def _evaluate(engine: Lone | Stack, runs: list[RunState], epoch: int,
              means: dict[str, torch.Tensor], autocast: Any) -> list[dict[str, float]]:
    """Each member's row of epoch `epoch`: its training `means` (name -> (M,)), its
    validation metrics and its method's extras, as floats (the epoch's one host sync)."""
    extras = engine.end_epoch(epoch)  # e.g. w_f, w_e, per member
    # eval mode on validation (the training split only when there is no validation
    # split: gap and cosine need one); training accuracy came from its batches
    scored = ("val",) if "val" in runs[0].data.splits else ("train",)
    bs = runs[0].cfg.train.eval_batch_size
    preds = {s: engine.predict([rs.data.splits[s] for rs in runs], bs, autocast)
             for s in scored}
    scalars = [{**{k: v[m] for k, v in means.items()},
                **split_metrics({s: p[m] for s, p in preds.items()}), **extras[m]}
               for m in range(len(runs))]
    values = torch.stack([torch.stack([v.float().reshape(()) for v in s.values()])
                          for s in scalars]).tolist()
    return [{"epoch": epoch, **dict(zip(s, v, strict=True))}
            for s, v in zip(scalars, values, strict=True)]


def _record(engine: Lone | Stack, runs: list[RunState], logged: list[dict[str, float]],
            bad: dict[str, list[int]], epoch: int, stacked: bool) -> None:
    """Each member's row into its history, its method's hook and its live log; a member
    whose loss turned NaN stops instead (a lone run raises)."""
    engine.sync()  # the hooks read each member's own weights and buffers
    for m, (rs, row) in enumerate(zip(runs, logged, strict=True)):
        if rs.error is None:
            _check_finite(rs, {k: v[m] for k, v in bad.items()}, epoch, stacked)
        if rs.error is not None:  # stopped now or before
            continue
        rs.history.append(row)
        rs.method.after_validation(epoch, row)  # e.g. keep the best teacher so far
        if rs.live is not None:
            log_epoch(rs.live, row)
    engine.restack()  # what a hook changed in a member's buffers goes into the stack


def _log_progress(name: str, runs: list[RunState], epoch: int, start: int,
                  elapsed: float) -> None:
    epochs = runs[0].cfg.train.epochs
    per_epoch = elapsed / (epoch + 1 - start)
    row = runs[0].history[-1] if runs[0].history else {}
    shown = ", ".join(f"{k}={row[k]:.4f}" for k in
                      ("loss_total", "val_acc_student", "val_acc_teacher") if k in row)
    log.info("%s epoch %d/%d: %s (%.2f s/epoch, ETA %s)", name, epoch + 1, epochs, shown,
             per_epoch, duration(per_epoch * (epochs - epoch - 1)))


def _save(engine: Lone | Stack, runs: list[RunState], name: str, epochs_done: int) -> None:
    """Every running member's checkpoint after `epochs_done` epochs."""
    engine.sync()  # the stacked buffers back into each member
    for rs in runs:
        if rs.error is None:
            save_checkpoint(rs.ckpt, checkpoint_state(rs, name, epochs_done))
    fault_point("epoch-saved")  # crash tests: between two epochs


def _check_finite(rs: RunState, first_bad: dict[str, int], epoch: int, stacked: bool) -> None:
    """Stop a member whose loss turned NaN/inf: raise for a lone run, mark it in a stack."""
    hits = [(b, k != "loss_total", k) for k, b in first_bad.items() if b >= 0]
    if not hits:
        return
    b, _, key = min(hits, key=lambda h: (h[0], not h[1]))
    kept = f"the last good checkpoint {rs.ckpt} is kept" if rs.ckpt.exists() \
        else "no checkpoint yet"
    message = (f"loss term {key!r} became NaN or infinite in epoch {epoch} (batch {b}); "
               f"training stopped, {kept}. Try a smaller train.lr or check the features.")
    if not stacked:
        raise AmidError(message)
    rs.error = message
    log.warning("sweep member %s stopped: %s", rs.run, message)

