"""The fast trainer against the plain loop research code usually is, same seed, same numbers.

The trainer keeps every cache on the device padded once to the longest
sample, slices batches by index, accumulates its metrics on the device and
syncs once per epoch. The plain loop here reads each sample from the HDF5
files by itself, pads each batch to that batch's longest sample, calls
`.item()` on every term of every batch and scores the validation split in
batches of its own. Same Method, same initial weights and batch order: the
epoch losses and accuracies must agree to float rounding. (Dropout is off:
its masks depend on the padded shape, which is exactly what differs.)
"""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from amid.cache import cache_path
from amid.distill.data import Batch
from amid.distill.methods import METHODS, MethodContext, method_options, weighted_total
from amid.distill.train import data_from_config, seed_everything, train

from .conftest import make_dataset, set_options


def _read_sample(files: dict[str, h5py.File], sample_id: str) -> dict[str, torch.Tensor]:
    out = {}
    for m, f in files.items():
        r = [s.decode() for s in f["ids"][:]].index(sample_id)
        lo, hi = f["offsets"][r], f["offsets"][r + 1]
        out[m] = torch.from_numpy(np.asarray(f["features"][lo:hi], dtype=np.float32))
    return out


def _batch(files, ids, rows, labels, target, auxiliary) -> Batch:
    samples = [_read_sample(files, ids[r]) for r in rows]

    def pad(m):  # to this batch's longest sample
        seqs = [s[m] for s in samples]
        return pad_sequence(seqs, batch_first=True), torch.tensor([len(s) for s in seqs])

    b = len(rows)
    return Batch(torch.tensor(rows), torch.tensor([labels[r] for r in rows]),
                 {m: pad(m) for m in target}, {m: pad(m) for m in auxiliary},
                 torch.ones(b, dtype=torch.bool))


def plain_loop(method_name, cfg, data, files, epochs):
    """Per-epoch mean loss_total and validation accuracies, the usual way."""
    tc = cfg.train
    generator = seed_everything(tc.seed)
    opts = method_options(method_name, cfg.methods.get(method_name))
    method = METHODS.get(method_name)(MethodContext(data, tc.model, opts, tc.epochs, method_name))
    opt = torch.optim.AdamW(method.network_parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    disc = method.discriminators
    disc_opt = (torch.optim.Adam(disc.parameters(), lr=tc.disc_lr, betas=(0.5, 0.999))
                if disc is not None else None)
    ids, labels = data.ids, data.labels.tolist()
    train_rows = data.splits["train"].tolist()
    val_rows = data.splits["val"].tolist()
    target, aux = list(data.target), list(data.auxiliary)
    n, bs = len(train_rows), tc.batch_size
    history = []
    for epoch in range(epochs):
        method.begin_epoch(epoch)
        method.train()
        perm = torch.randperm(n, generator=generator).tolist()
        totals = []
        for lo in range(0, n - 1 if n % bs == 1 else n, bs):
            batch = _batch(files, ids, [train_rows[i] for i in perm[lo:lo + bs]], labels,
                           target, aux)
            out = method(batch)
            if disc_opt is not None:
                d = method.discriminator_losses(batch, out, epoch)
                if d is not None:
                    disc_opt.zero_grad()
                    d["total"].backward()
                    disc_opt.step()
            loss = weighted_total(method.losses(batch, out, epoch), method.weights(epoch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals.append(loss.item())
        method.end_epoch(epoch)
        method.eval()
        right = {"student": 0, "teacher": 0}
        with torch.no_grad():
            for lo in range(0, len(val_rows), 7):  # a batch size of its own
                rows = val_rows[lo:lo + 7]
                pred = method.predict(_batch(files, ids, rows, labels, target, aux))
                y = torch.tensor([labels[r] for r in rows])
                for role, (_, logits) in pred.items():
                    right[role] += int((logits.argmax(1) == y).sum())
        row = {"loss_total": float(np.mean(totals)),
               "val_acc_student": right["student"] / len(val_rows)}
        if method.has_teacher:
            row["val_acc_teacher"] = right["teacher"] / len(val_rows)
        history.append(row)
    return history


@pytest.mark.parametrize("method,student", [("amid", "gru"), ("ts_ta", "pool"),
                                            ("baseline", "lstm")])
def test_the_fast_trainer_equals_the_plain_loop(tmp_path, method, student):
    syn = make_dataset(tmp_path, visual_len=(2, 9))  # batches padded to very different lengths
    cfg = copy.deepcopy(syn.cfg)
    cfg.train.epochs, cfg.train.batch_size = 3, 16
    cfg.train.model.student, cfg.train.model.dropout = student, 0.0
    set_options(cfg, "amid", warmup_epochs=1)  # epochs with and without the adversarial terms
    data = data_from_config(cfg, torch.device("cpu"))
    fast = train(method, cfg, tmp_path / "fast", data=data, live=False)
    paths = {m: cache_path(syn.root / "cache", "synth", m, "synthetic")
             for m in [*data.target, *data.auxiliary]}
    files = {m: h5py.File(p, "r") for m, p in paths.items()}
    try:
        plain = plain_loop(method, cfg, data, files, cfg.train.epochs)
    finally:
        for f in files.values():
            f.close()
    for a, b in zip(fast, plain, strict=True):
        assert a["loss_total"] == pytest.approx(b["loss_total"], rel=1e-5, abs=1e-6)
        for key in ("val_acc_student", "val_acc_teacher"):
            if key in b:  # the same count of right answers (float32 on one side: 1e-6)
                assert a[key] == pytest.approx(b[key], abs=1e-6), (a["epoch"], key)
            else:
                assert key not in a
