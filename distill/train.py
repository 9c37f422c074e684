"""The training loop of `amid-train`: one method, one run folder, resumable.

Reads top to bottom: device and seeds, data on the device, the method and its
two optimisers, resume, then per epoch: a seeded permutation, batches as
index slices, one forward of every encoder per batch, the discriminator step
(when the method has one that epoch) before the networks' step, metrics kept
as device tensors (one host sync per epoch), evaluation, checkpoint, log.
At the end the modules go out as safetensors + JSON and the predictions of
the LAST epoch as `outputs.h5` (test data is never used to pick anything).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amid.config import Config, to_dict
from amid.devices import amp_allowed
from amid.devices import resolve_device as _resolve
from amid.distill.checkpoint import (
    load_checkpoint,
    remove_strays,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from amid.distill.data import TrainData, load_data
from amid.distill.inference import save_module
from amid.distill.methods import METHODS, MethodContext
from amid.distill.report import predict_split, split_metrics, write_outputs
from amid.errors import AmidError
from amid.locking import ExclusiveLock

log = logging.getLogger("amid.distill")


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
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_from_config(cfg: Config, device: torch.device) -> TrainData:
    ds = cfg.dataset
    extractors = {m: cfg.extract[m].extractor for m in [*ds.target, *ds.auxiliary]}
    return load_data(ds.manifest, ds.root, ds.cache_dir, ds.name, ds.target, ds.auxiliary,
                     extractors, fold=ds.fold, device=device, max_steps=cfg.train.max_steps)


def open_live(run: Path, history: list[dict[str, float]]) -> Any:
    """A fresh dvclive folder with the checkpoint's history replayed into it.

    Replaying (instead of dvclive's own resume) keeps the logged history equal
    to the checkpoint's even when a crash fell between logging and saving.
    """
    from dvclive import Live

    live = Live(dir=str(run / "dvclive"), save_dvc_exp=False, dvcyaml=None, report=None)
    for row in history:
        _log_epoch(live, row)
    return live


def _log_epoch(live: Any, row: dict[str, float]) -> None:
    live.step = int(row["epoch"])
    for name, value in row.items():
        if name != "epoch":
            live.log_metric(name, value)
    live.next_step()


def train(method_name: str, cfg: Config, run: str | Path, *, data: TrainData | None = None,
          live: bool = True) -> list[dict[str, float]]:
    """Train `method_name` into folder `run`, resuming from `run/checkpoint.pt` if present.

    Returns the per-epoch metric history. `data` may be passed to reuse loaded
    caches (tests, several methods in one process); it must be on the device.
    One trainer per run folder: a second one is refused while the first runs.
    """
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    busy = AmidError(f"{run} is being trained by another amid-train (lock {run / '.lock'}); "
                     "wait for it or choose another --out")
    with ExclusiveLock(run / ".lock", busy):
        return _train(method_name, cfg, run, data=data, live=live)


def _train(method_name: str, cfg: Config, run: Path, *, data: TrainData | None,
           live: bool) -> list[dict[str, float]]:
    """The loop itself; `train` holds the run folder's lock around it."""
    tc = cfg.train
    config = to_dict(cfg)
    # ---------------------------------------------------------------- setup
    device = resolve_device(tc.device)
    generator = seed_everything(tc.seed)
    if data is None:
        data = data_from_config(cfg, device)
    use_amp, autocast = mixed_precision(device, tc.amp)
    method = METHODS.get(method_name)(MethodContext(data, tc.model, tc.loss, tc.epochs)).to(device)
    if tc.compile:  # forward + losses compiled, eager fallback (distill/fast.py)
        from amid.distill.fast import compile_method

        compile_method(method, device)
    opt = torch.optim.AdamW(method.network_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    disc_opt = None
    if method.discriminators is not None:
        disc_opt = torch.optim.Adam(method.discriminators.parameters(), lr=tc.disc_lr,
                                    betas=(0.5, 0.999))
    # ---------------------------------------------------------------- resume
    start, history = 0, []
    ckpt_path = run / "checkpoint.pt"
    remove_strays(run)  # temporaries of a killed run
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, method_name, config)
        method.load_state_dict(ckpt["method_state"])
        opt.load_state_dict(ckpt["optimizer"])
        if disc_opt is not None:
            disc_opt.load_state_dict(ckpt["disc_optimizer"])
        set_rng_state(ckpt["rng"], generator)
        start, history = ckpt["epoch"], ckpt["history"]
        log.info("resuming %s from %s after epoch %d", method_name, ckpt_path, start)
    # written only now: a refused resume must not overwrite the run's configuration
    (run / "config.json").write_text(json.dumps({"method": method_name, "config": config},
                                                indent=2), encoding="utf-8")
    logger = open_live(run, history) if live else None
    train_rows = data.splits["train"]  # (n,) row indices on the device
    n, bs = int(train_rows.shape[0]), tc.batch_size
    if bs > n:  # clamped, not an error: a small dataset (or fold) is still trainable
        log.warning("train.batch_size %d > %d training samples: one batch of %d per epoch",
                    bs, n, n)
    # a last batch of one sample has no pairs for the MI/JSD terms: drop it
    n_used = n - 1 if n % bs == 1 and n > 1 else n
    # ---------------------------------------------------------------- epochs
    for epoch in range(start, tc.epochs):
        method.begin_epoch(epoch)
        method.train()
        perm = torch.randperm(n, generator=generator).to(device)  # (n,)
        sums: torch.Tensor | None = None  # (K,) per-term sums over batches
        first_bad: torch.Tensor | None = None  # (K,) first batch with a non-finite term, or -1
        keys: list[str] = []
        for b, lo in enumerate(range(0, n_used, bs)):
            batch = data.batch(train_rows[perm[lo:lo + bs]])  # x: (B, T, D) per modality
            with autocast:
                out = method(batch)  # s, t, a: (B, d); logits_*: (B, C)
            out = {k: v.float() for k, v in out.items()}
            terms: dict[str, torch.Tensor] = {}
            if disc_opt is not None:
                d = method.discriminator_losses(batch, out, epoch)  # t, s detached inside
                if d is not None:
                    disc_opt.zero_grad(set_to_none=True)
                    d["total"].backward()
                    disc_opt.step()
                    terms |= {k if k.startswith("disc") else f"disc_{k}": v for k, v in d.items()}
            terms |= {f"loss_{k}": v for k, v in method.losses(batch, out, epoch).items()}
            opt.zero_grad(set_to_none=True)
            terms["loss_total"].backward()
            opt.step()
            if sums is None or list(terms) != keys:  # first batch, or disc terms switched on
                keys, sums, first_bad = _regrow(keys, list(terms), sums, first_bad, device)
            vec = torch.stack([terms[k].detach().float() for k in keys])  # (K,)
            sums += vec
            bad = ~torch.isfinite(vec) & (first_bad < 0)
            first_bad = torch.where(bad, torch.full_like(first_bad, b), first_bad)
        n_batches = b + 1
        # ------------------------------------------------ end of epoch: the one sync
        extra = method.end_epoch(epoch)  # e.g. w_f, w_e
        preds = {s: predict_split(method, data, data.splits[s], tc.eval_batch_size,
                                  autocast if use_amp else None)
                 for s in ("train", "val") if s in data.splits}
        scalars = {**{k: v for k, v in zip(keys, sums / n_batches, strict=True)},
                   **split_metrics(preds), **extra}
        values = torch.stack([v.float().reshape(()) for v in scalars.values()]).tolist()
        stop_if_nonfinite(keys, first_bad.tolist(), epoch, ckpt_path)
        row = {"epoch": epoch, **dict(zip(scalars, values, strict=True))}
        history.append(row)
        save_checkpoint(ckpt_path, checkpoint_state(method, opt, disc_opt, generator, method_name,
                                           epoch + 1, history, config))
        if logger is not None:
            _log_epoch(logger, row)
        log.info("%s epoch %d: %s", method_name, epoch, _short(row))
    if logger is not None:
        logger.end()
    finish_run(method, method_name, data, cfg, run)
    return history


def checkpoint_state(method: Any, opt: Any, disc_opt: Any, generator: torch.Generator, name: str,
            epoch: int, history: list, config: dict) -> dict[str, Any]:
    return {
        "method": name,
        "epoch": epoch,
        "history": history,
        "config": config,
        "method_state": method.state_dict(),
        "optimizer": opt.state_dict(),
        "disc_optimizer": disc_opt.state_dict() if disc_opt is not None else None,
        "rng": rng_state(generator),
    }


def _regrow(old: list[str], new: list[str], sums: torch.Tensor | None,
            first_bad: torch.Tensor | None, device: torch.device
            ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Extend the accumulators when new terms appear (discriminator on mid-epoch)."""
    keys = old + [k for k in new if k not in old]
    grown = torch.zeros(len(keys), device=device)
    bad = torch.full((len(keys),), -1, dtype=torch.long, device=device)
    if sums is not None:
        grown[: len(old)] = sums
        bad[: len(old)] = first_bad
    return keys, grown, bad


def stop_if_nonfinite(keys: list[str], first_bad: list[int], epoch: int, ckpt: Path) -> None:
    hits = [(b, k != "loss_total", k) for k, b in zip(keys, first_bad, strict=True) if b >= 0]
    if not hits:
        return
    b, _, key = min(hits, key=lambda h: (h[0], not h[1]))
    kept = f"the last good checkpoint {ckpt} is kept" if ckpt.exists() else "no checkpoint yet"
    raise AmidError(
        f"loss term {key!r} became NaN or infinite in epoch {epoch} (batch {b}); training "
        f"stopped, {kept}. Try a smaller train.lr or check the features."
    )


def _short(row: dict[str, float]) -> str:
    keys = [k for k in ("loss_total", "val_acc_student", "val_acc_teacher") if k in row]
    return ", ".join(f"{k}={row[k]:.4f}" for k in keys)


def finish_run(method: Any, name: str, data: TrainData, cfg: Config, run: Path) -> None:
    """Safetensors + JSON per module, and the last epoch's predictions as outputs.h5."""
    tc = cfg.train
    common = {
        "method": name,
        "classes": data.classes,
        "target": list(data.target),
        "auxiliary": list(data.auxiliary),
        "feature_dims": {m: d.dim for m, d in {**data.target, **data.auxiliary}.items()},
        "max_steps": tc.max_steps,
        "dataset": data.dataset,
        "fold": data.fold,
        "seed": tc.seed,
    }
    for role, (module, arch) in method.exports().items():
        save_module(module, {**common, "module": role, "arch": arch}, run, role)
    preds = {s: predict_split(method, data, rows, tc.eval_batch_size)
             for s, rows in data.splits.items()}
    write_outputs(run / "outputs.h5", data, preds, method=name, seed=tc.seed)
