"""Train M members of one method together as a stacked ensemble (`amid-train --sweep`).

Members differ only in per-member values (`PER_MEMBER`: seed, learning rates,
weight decay, loss weights, tau, mu); everything else, and so every shape, is
shared. The loop is the plain trainer's (`amid.distill.train`), step for step:
per member a seeded permutation, index-slice batches, the discriminator step
before the networks' step, metrics kept on the device and one host sync per
epoch. Each member ends as a normal run folder (config.json, safetensors,
checkpoint.pt that the plain trainer can resume, dvclive/, outputs.h5).

Resumable: with a `state` file the stack's state is saved between epochs
(`stack_state`, at most every 30 s) and an interrupted stack carries on from it.

Supported: methods `STACKABLE` with `fixed_teacher` off and every auxiliary
modality present for every sample (the caller sends the rest through the
plain trainer). A member whose loss turns NaN or infinite stops logging and
writes no outputs; the others go on (members never mix: each only reads its
own slice of the stack).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amid.config import Config, to_dict
from amid.distill import ensemble_losses as L
from amid.distill import stack_state as S
from amid.distill.checkpoint import save_checkpoint
from amid.distill.data import TrainData
from amid.distill.ensemble import Noise, Stack, StackForward
from amid.distill.methods import METHODS, Method, MethodContext
from amid.distill.report import split_metrics
from amid.distill.train import (
    checkpoint_state,
    finish_run,
    mixed_precision,
    open_live,
    resolve_device,
    seed_everything,
    stop_if_nonfinite,
)
from amid.errors import AmidError
from amid.locking import ExclusiveLock

log = logging.getLogger("amid.distill")

STACKABLE = ("baseline", "teacher", "ts", "ts_ta", "amid")
PER_MEMBER = ("train.seed", "train.lr", "train.weight_decay", "train.disc_lr", "train.loss.alpha",
              "train.loss.beta", "train.loss.gamma", "train.loss.jsd", "train.loss.tau",
              "train.loss.mu", "train.methods")


def why_not_stackable(method: str, cfg: Config, data: TrainData | None = None) -> str | None:
    """None when members of this method/config can share a stack, else the reason."""
    if method not in STACKABLE:
        return f"method {method!r} is not one of {', '.join(STACKABLE)}"
    if cfg.train.loss.fixed_teacher:
        return "train.loss.fixed_teacher is on"
    if method != "baseline" and data is not None and data.auxiliary and not data.all_aux_present:
        return "some samples miss an auxiliary modality"
    return None


@dataclass
class MemberResult:
    run: Path
    history: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None


def _hp(cfgs: list[Config], get: Any, device: torch.device) -> torch.Tensor:
    return torch.tensor([float(get(c)) for c in cfgs], device=device)


def train_stack(method_name: str, cfgs: list[Config], runs: list[Path], data: TrainData, *,
                live: bool = True, state: Path | None = None) -> list[MemberResult]:
    """Train every (config, run folder) pair as one stack; per-member results.

    `state`: a file to keep the stack's state in between epochs
    (`stack_state`); an existing one is resumed. Each member's run folder is
    locked for the stack's whole life, as the plain trainer locks its own.
    """
    with contextlib.ExitStack() as locks:
        for run in runs:
            run.mkdir(parents=True, exist_ok=True)
            locks.enter_context(ExclusiveLock(run / ".lock", AmidError(
                f"{run} is being trained by another amid-train (lock {run / '.lock'}); wait "
                "for it or choose another --out")))
        return _train_stack(method_name, cfgs, runs, data, live, state)


def _train_stack(method_name: str, cfgs: list[Config], runs: list[Path], data: TrainData,
                 live: bool, state_file: Path | None) -> list[MemberResult]:
    tc = cfgs[0].train
    device = resolve_device(tc.device)
    size = len(cfgs)
    members: list[Method] = []
    perm_gens: list[torch.Generator] = []
    drop_gens: list[torch.Generator] = []
    host_rng: list[tuple[Any, Any]] = []
    for cfg in cfgs:
        perm_gens.append(seed_everything(cfg.train.seed))
        host_rng.append((np.random.get_state(), random.getstate()))
        ctx = MethodContext(data, cfg.train.model, cfg.train.loss, cfg.train.epochs)
        members.append(METHODS.get(method_name)(ctx))
        drop_gens.append(torch.Generator().manual_seed(0))
        drop_gens[-1].set_state(torch.get_rng_state())  # the lone run's dropout stream
    template = members[0]
    ops: Any = L
    if tc.compile:  # the loss terms compiled, eager fallback (distill/fast.py)
        from amid.distill.fast import compile_stack_losses

        ops = compile_stack_losses(device)
    stack = Stack(members, device)
    if device.type == "cpu":
        noise = Noise(drop_gens)
    else:
        noise = Noise(None, torch.Generator(device).manual_seed(tc.seed))
    fwd = StackForward(stack, noise)
    use_amp, autocast = mixed_precision(device, tc.amp)
    lc = tc.loss
    hp = {k: _hp(cfgs, lambda c, k=k: getattr(c.train.loss, k), device)
          for k in ("alpha", "beta", "gamma", "jsd", "tau", "mu")}
    hp["one_minus_mu"] = torch.tensor([1.0 - c.train.loss.mu for c in cfgs], device=device)
    opt = L.StackedAdam(stack.flat["net"], [c.train.lr for c in cfgs],
                        [c.train.weight_decay for c in cfgs])
    disc_opt = None
    if "disc" in stack.flat:
        disc_opt = L.StackedAdam(stack.flat["disc"], [c.train.disc_lr for c in cfgs],
                                 [0.0] * size, betas=(0.5, 0.999))
    teacher = template.has_teacher
    use_ta = getattr(template, "use_ta", False)
    use_adv = getattr(template, "use_adv", False)
    w = torch.full((size, 2), 0.5, device=device)
    align = torch.zeros(size, 4, device=device)
    results = [MemberResult(run) for run in runs]
    # ---------------------------------------------------------------- resume
    tensors = {"w": w, "align": align, **{f"flat_{k}": v for k, v in stack.flat.items()}}
    optimisers = {"net": opt, **({"disc": disc_opt} if disc_opt is not None else {})}
    for k, o in optimisers.items():
        tensors |= {f"{k}_exp_avg": o.exp_avg, f"{k}_exp_avg_sq": o.exp_avg_sq}
    generators = [*perm_gens, *(noise.generators or [noise.shared])]
    configs = [to_dict(c) for c in cfgs]
    start = 0
    if state_file is not None and state_file.exists():
        saved = S.load_state(state_file, method_name, configs, runs)
        S.restore(saved, tensors, generators)
        for k, o in optimisers.items():
            o.step_count = saved["step_counts"][k]
        for res, hist, err in zip(results, saved["histories"], saved["errors"], strict=True):
            res.history, res.error = hist, err
        start = saved["epoch"]
        log.info("resuming the %s stack of %d from %s after epoch %d", method_name, size,
                 state_file, start)
    # written only now: a refused resume must not overwrite the members' configurations
    for run, config in zip(runs, configs, strict=True):
        (run / "config.json").write_text(json.dumps({"method": method_name, "config": config},
                                                    indent=2), encoding="utf-8")
    last_save = time.monotonic()
    train_rows = data.splits["train"]
    n, bs = int(train_rows.shape[0]), tc.batch_size
    n_used = n - 1 if n % bs == 1 and n > 1 else n
    for epoch in range(start, tc.epochs):
        adversarial = use_adv and epoch >= lc.warmup_epochs
        align.zero_()
        perm = torch.stack([torch.randperm(n, generator=g) for g in perm_gens]).to(device)
        sums: torch.Tensor | None = None  # (M, K)
        first_bad: torch.Tensor | None = None
        keys: list[str] = []
        for b, lo in enumerate(range(0, n_used, bs)):
            idx = train_rows[perm[:, lo:lo + bs]]  # (M, B)
            labels = data.labels[idx]
            target = {m: (d.x[idx], d.lengths[idx]) for m, d in data.target.items()}
            aux = {m: (d.x[idx], d.lengths[idx]) for m, d in data.auxiliary.items()} \
                if teacher else {}
            with autocast:
                out = fwd(target, aux, teacher)
            out = {k: v.float() for k, v in out.items()}
            terms: dict[str, torch.Tensor] = {}
            if adversarial and disc_opt is not None:
                d = _disc_terms(ops, fwd, template, out, labels, lc.enhanced_disc)
                disc_opt.zero_grad()
                d["total"].sum().backward()
                disc_opt.step()
                terms |= {k if k.startswith("disc") else f"disc_{k}": v for k, v in d.items()}
            net = _terms(ops, method_name, fwd, template, out, labels, hp, w, adversarial,
                         use_ta, use_adv, lc.enhanced_disc)
            terms |= {f"loss_{k}": v for k, v in net.items()}
            if adversarial:
                align += ops.alignment_stats(out["t"], out["s"], labels)
            opt.zero_grad()
            terms["loss_total"].sum().backward()
            opt.step()
            if sums is None or list(terms) != keys:
                keys, sums, first_bad = _regrow(keys, list(terms), sums, first_bad, size, device)
            vec = torch.stack([terms[k].detach().float() for k in keys], dim=1)  # (M, K)
            sums += vec
            bad = ~torch.isfinite(vec) & (first_bad < 0)
            first_bad = torch.where(bad, torch.full_like(first_bad, b), first_bad)
        n_batches = b + 1
        # ------------------------------------------------ end of epoch: the one sync
        extra: dict[str, torch.Tensor] = {}
        if use_adv:
            if adversarial and lc.dynamic_weights:
                w.copy_(L.update_weights(w, align, hp["mu"], hp["one_minus_mu"]))  # in place: saved
            extra = {"w_f": w[:, 0], "w_e": w[:, 1]}
        preds = {s: predict_stack(fwd, data, data.splits[s], tc.eval_batch_size, teacher,
                                  autocast if use_amp else None)
                 for s in ("train", "val") if s in data.splits}
        per_member = []
        for m in range(size):
            scalars = {**dict(zip(keys, sums[m] / n_batches, strict=True)),
                       **split_metrics({s: p[m] for s, p in preds.items()}),
                       **{k: v[m] for k, v in extra.items()}}
            per_member.append(scalars)
        names = list(per_member[0])
        values = torch.stack([torch.stack([s[k].float().reshape(()) for k in names])
                              for s in per_member]).tolist()
        bad_rows = first_bad.tolist()
        for m, res in enumerate(results):
            if res.error is not None:
                continue
            try:
                stop_if_nonfinite(keys, bad_rows[m], epoch, res.run / "checkpoint.pt")
            except AmidError as exc:
                res.error = str(exc)
                log.warning("sweep member %s stopped: %s", res.run, exc)
                continue
            res.history.append({"epoch": epoch, **dict(zip(names, values[m], strict=True))})
        log.info("%s stack of %d, epoch %d done", method_name, size, epoch)
        if all(r.error is not None for r in results):
            break
        if (state_file is not None and epoch + 1 < tc.epochs
                and time.monotonic() - last_save >= S.INTERVAL_S):
            S.save_state(state_file, method=method_name, configs=configs, runs=runs,
                         epoch=epoch + 1, tensors=tensors,
                         step_counts={k: o.step_count for k, o in optimisers.items()},
                         generators=generators, histories=[r.history for r in results],
                         errors=[r.error for r in results])
            last_save = time.monotonic()
    for m, res in enumerate(results):
        if res.error is None:
            _finish_member(m, members[m], stack, opt, disc_opt, w, align, perm_gens[m],
                           drop_gens[m], host_rng[m], method_name, cfgs[m], data, res, live)
    if state_file is not None:  # every member has its own checkpoint now
        state_file.unlink(missing_ok=True)
    return results


def _disc_terms(ops: Any, fwd: StackForward, template: Method, out: dict[str, torch.Tensor],
                labels: torch.Tensor, enhanced: bool) -> dict[str, torch.Tensor]:
    d = template.discriminators
    t, s = out["t"].detach(), out["s"].detach()
    e = d["e"] if enhanced else None
    return ops.discriminator_terms(
        fwd.discriminator(d["f"], t, False), fwd.discriminator(d["f"], s, False),
        fwd.discriminator(e, t, False) if e is not None else None,
        fwd.discriminator(e, s, False) if e is not None else None, labels)


def _terms(ops: Any, name: str, fwd: StackForward, template: Method, out: dict[str, torch.Tensor],
           labels: torch.Tensor, hp: dict[str, torch.Tensor], w: torch.Tensor,
           adversarial: bool, use_ta: bool, use_adv: bool, enhanced: bool
           ) -> dict[str, torch.Tensor]:
    """The loss terms of `methods.simple` / `methods.amid`, per member (M,), same keys."""
    if name == "baseline":
        ce = ops.ce(out["logits_s"], labels)
        return {"cls_student": ce, "total": ce}
    keep = torch.ones_like(labels, dtype=torch.bool)  # every auxiliary modality is present
    ce_t = ops.ce(out["logits_t"], labels, keep)
    if name == "teacher":
        return {"cls_teacher": ce_t, "total": ce_t}
    variant = template.ctx.loss.mi_variant
    terms = {"cls_student": ops.ce(out["logits_s"], labels), "cls_teacher": ce_t}
    terms["jsd"] = ops.jsd(out["logits_t"], out["logits_s"])
    terms["ts"] = ops.symmetric_mi(out["t"], out["s"], labels, hp["tau"], variant)
    total = terms["cls_student"] + ce_t
    total = total + hp["jsd"] * terms["jsd"] + hp["alpha"] * terms["ts"]
    if use_ta:
        terms["ta"] = ops.symmetric_mi(out["t"], out["a"], labels, hp["tau"], variant)
        total = total + hp["beta"] * terms["ta"]
    if use_adv:
        zero = torch.zeros_like(total)
        terms |= {"adv_f": zero, "adv_e": zero, "adv": zero}
    if adversarial:
        d = template.discriminators
        adv = ops.adversarial_terms(
            fwd.discriminator(d["f"], out["s"], True),
            fwd.discriminator(d["e"], out["s"], True) if enhanced else None, labels, w)
        terms |= {"adv_f": adv["adv_f"], "adv_e": adv["adv_e"], "adv": adv["total"]}
        total = total + hp["gamma"] * adv["total"]
    return {**terms, "total": total}


def _regrow(old: list[str], new: list[str], sums: torch.Tensor | None,
            first_bad: torch.Tensor | None, size: int, device: torch.device
            ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    keys = old + [k for k in new if k not in old]
    grown = torch.zeros(size, len(keys), device=device)
    bad = torch.full((size, len(keys)), -1, dtype=torch.long, device=device)
    if sums is not None and first_bad is not None:
        grown[:, : len(old)] = sums
        bad[:, : len(old)] = first_bad
    return keys, grown, bad


@torch.no_grad()
def predict_stack(fwd: StackForward, data: TrainData, rows: torch.Tensor, batch_size: int,
                  teacher: bool, autocast: Any = None) -> list[dict[str, torch.Tensor]]:
    """Eval-mode predictions of every member on `rows`, as `report.predict_split` gives them."""
    size = fwd.stack.size
    chunk = max(1, batch_size // size)  # members share the rows: bound the stacked batch
    fwd.noise.training = False
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, int(rows.shape[0]), chunk):
        idx = rows[start:start + chunk]

        def take(mods: dict, idx: torch.Tensor = idx) -> dict:
            return {m: (d.x[idx].expand(size, *d.x[idx].shape),
                        d.lengths[idx].expand(size, -1)) for m, d in mods.items()}

        with autocast if autocast is not None else contextlib.nullcontext():
            out = fwd(take(data.target), take(data.auxiliary) if teacher else {}, teacher)
        pairs = {"student_emb": "s", "student_logits": "logits_s"}
        if teacher:
            pairs |= {"teacher_emb": "t", "teacher_logits": "logits_t"}
        for name, key in pairs.items():
            parts.setdefault(name, []).append(out[key].float())
    fwd.noise.training = True
    cat = {k: torch.cat(v, dim=1) for k, v in parts.items()}  # (M, n, ...)
    common = {"labels": data.labels[rows], "present": data.aux_present[rows]}
    return [{**{k: v[m] for k, v in cat.items()}, **common} for m in range(size)]


def _finish_member(m: int, method: Method, stack: Stack, opt: L.StackedAdam,
                   disc_opt: L.StackedAdam | None, w: torch.Tensor, align: torch.Tensor,
                   perm_gen: torch.Generator, drop_gen: torch.Generator, host: tuple[Any, Any],
                   name: str, cfg: Config, data: TrainData, res: MemberResult,
                   live: bool) -> None:
    """Member m's weights back into its own Method, then the plain trainer's run folder."""
    device = resolve_device(cfg.train.device)
    stack.unstack(m, method)
    method.to(device)
    if hasattr(method, "w"):
        method.w.copy_(w[m])
        method.align.copy_(align[m])
    tc = cfg.train
    net = torch.optim.AdamW(method.network_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    _load_adam(net, opt, m)
    disc = None
    if disc_opt is not None and method.discriminators is not None:
        disc = torch.optim.Adam(method.discriminators.parameters(), lr=tc.disc_lr,
                                betas=(0.5, 0.999))
        _load_adam(disc, disc_opt, m)
    # the checkpoint's RNG states are the member's own streams, as a lone run leaves them
    saved = torch.get_rng_state()
    torch.set_rng_state(drop_gen.get_state())
    np.random.set_state(host[0])
    random.setstate(host[1])
    state = checkpoint_state(method, net, disc, perm_gen, name, len(res.history), res.history,
                    to_dict(cfg))
    save_checkpoint(res.run / "checkpoint.pt", state)
    torch.set_rng_state(saved)
    if live:
        open_live(res.run, res.history).end()
    finish_run(method, name, data, cfg, res.run)


def _load_adam(torch_opt: torch.optim.Optimizer, opt: L.StackedAdam, m: int) -> None:
    if opt.step_count == 0:
        return
    shapes = [p.shape for p in torch_opt.param_groups[0]["params"]]
    sd = torch_opt.state_dict()
    sd["state"] = {k: {n: v.to(p.device) for n, v in st.items()} for (k, st), p in
                   zip(opt.member_state(m, shapes).items(), torch_opt.param_groups[0]["params"],
                       strict=True)}
    torch_opt.load_state_dict(sd)
