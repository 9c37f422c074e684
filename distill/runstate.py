"""One run of the training loop (a lone run, or one member of a stack): its state,
built as its lone run would be, resumed from and saved into its checkpoint."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amid.config import Config
from amid.distill.checkpoint import (
    load_checkpoint,
    own_storage,
    remove_strays,
    rng_state,
    set_rng_state,
)
from amid.distill.data import TrainData
from amid.distill.methods import Method, MethodContext, method_options
from amid.distill.methods.base import method_class, method_record
from amid.distill.subsample import train_rows_for
from amid.errors import AmidError, CheckpointError
from amid.schema import to_dict

log = logging.getLogger("amid.distill")


@dataclass
class RunState:
    """A run's configuration, folder and training state."""

    cfg: Config
    run: Path
    data: TrainData | None = None  # the run's view: its training rows and statistics
    method: Method | None = None
    opt: torch.optim.Optimizer | None = None
    disc_opt: torch.optim.Optimizer | None = None
    generator: torch.Generator | None = None  # the batch order
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None  # why a stacked member stopped (a lone run raises instead)
    live: Any = None

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoint.pt"


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and random; the returned generator draws the batch order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_run(rs: RunState, name: str, data: TrainData, device: torch.device) -> None:
    """The run's batch-order generator, training rows, method and optimisers."""
    rs.generator = seed_everything(rs.cfg.train.seed)
    subset = train_rows_for(data, rs.cfg)  # dataset.train_per_class / train_fraction
    rs.data = data if subset is None else data.with_train_rows(subset)
    raw, tc = rs.cfg.methods.get(name), rs.cfg.train
    ctx = MethodContext(rs.data, tc.model, method_options(name, raw), tc.epochs, name)
    rs.method = method_class(name, raw)(ctx).to(device)
    # fused: one kernel per parameter for the whole update (CPU and GPU), where
    # PyTorch's default on the CPU loops in Python; several times faster, same rule
    rs.opt = torch.optim.AdamW(rs.method.network_parameters(), lr=tc.lr,
                               weight_decay=tc.weight_decay, fused=True)
    if rs.method.discriminators is not None:
        rs.disc_opt = torch.optim.Adam(rs.method.discriminators.parameters(), lr=tc.disc_lr,
                                       betas=(0.5, 0.999), fused=True)
    rs.config = run_config(rs.cfg, name)


def run_config(cfg: Config, method: str) -> dict[str, Any]:
    """What a run was made from: dataset, extraction, training, and ITS method's options
    (resolved: `preset` where the method has presets, and `method`, the registered
    method trained, which differs from the name for a variant)."""
    d = to_dict(cfg)
    return {"dataset": d["dataset"], "extract": d["extract"], "train": d["train"],
            "methods": {method: method_record(method, cfg.methods.get(method))}}


def resume(name: str, runs: list[RunState]) -> int:
    """Load each member's checkpoint; every member must have reached the same epoch."""
    epochs, rngs = [], []
    for rs in runs:
        remove_strays(rs.run)  # temporaries of a killed run
        if not rs.ckpt.exists():
            epochs.append(0)
            continue
        ckpt = load_checkpoint(rs.ckpt, name, rs.config, rs.data.inputs)
        if int(ckpt["epoch"]) > rs.cfg.train.epochs:  # its weights are not a run this long
            raise CheckpointError(
                f"{rs.run} holds a run of {ckpt['epoch']} epochs, more than train.epochs "
                f"{rs.cfg.train.epochs}: use another --out folder (or delete {rs.ckpt} to "
                "train this one again)")
        rs.method.load_state_dict(ckpt["method_state"])
        rs.opt.load_state_dict(ckpt["optimizer"])
        if rs.disc_opt is not None:
            rs.disc_opt.load_state_dict(ckpt["disc_optimizer"])
        set_rng_state(ckpt["rng"], rs.generator)
        rngs.append(ckpt["rng"])
        rs.history = ckpt["history"]
        epochs.append(int(ckpt["epoch"]))
        log.info("resuming %s in %s after epoch %d", name, rs.run, ckpt["epoch"])
    if len(set(epochs)) > 1:
        raise AmidError(f"the members of this stack stopped after different epochs "
                        f"({dict(zip((str(r.run) for r in runs), epochs, strict=True))}); "
                        "they are resumed one by one by amid-train --sweep")
    if len(runs) > 1 and epochs[0]:  # the stack's shared dropout stream: member 0's
        set_rng_state(rngs[0], runs[0].generator)
    return epochs[0]


def checkpoint_state(rs: RunState, name: str, epoch: int) -> dict[str, Any]:
    return {"method": name, "epoch": epoch, "history": rs.history, "config": rs.config,
            "inputs": rs.data.inputs, "method_state": own_storage(rs.method.state_dict()),
            "optimizer": rs.opt.state_dict(),
            "disc_optimizer": rs.disc_opt.state_dict() if rs.disc_opt is not None else None,
            "rng": rng_state(rs.generator)}
