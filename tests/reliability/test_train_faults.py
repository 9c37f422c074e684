"""Faults during `amid-train`: SIGKILL (also mid-checkpoint), a full disk while checkpointing."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import amid.distill.checkpoint as checkpoint_module
from amid.config import load_config
from amid.distill.train import train
from amid.errors import CheckpointError

from .conftest import assert_user_error, cli, make_train_project


def _train_cmd(params: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("amid-train")
    return [str(exe), "--method", "amid", "--params", str(params), "--out", str(out), "-q"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[...])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def _epoch(run: Path) -> int:
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["epoch"])


@pytest.mark.slow
def test_sigkill_mid_training_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL at exact points (amid.faults, no timing): after epoch 3's checkpoint, and
    inside epoch 6's checkpoint write; each rerun resumes from the last good checkpoint and
    the run ends bit-equal to an uninterrupted one."""
    params = make_train_project(tmp_path, epochs=10)
    straight = subprocess.run(_train_cmd(params, tmp_path / "straight"), env=_env(),
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "killed"
    for point, survives in (("epoch-saved:3", 3), ("checkpoint-written:3", 5)):
        proc = subprocess.run(_train_cmd(params, run), env={**_env(), "AMID_FAULT": point},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr)
        assert _epoch(run) == survives, point  # the last good checkpoint, and it loads
        assert not (run / "outputs.h5").exists()
    assert list(run.glob(".checkpoint.pt.*.tmp"))  # the killed write's temporary is there
    done = subprocess.run(_train_cmd(params, run), env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(run.glob(".*.tmp"))  # and the rerun removed it
    a, b = (torch.load(r / "checkpoint.pt", weights_only=True)
            for r in (tmp_path / "straight", run))
    assert a["epoch"] == b["epoch"] == 10 and a["history"] == b["history"]
    for name in ("student", "teacher", "discriminators"):
        x, y = (load_file(r / f"{name}.safetensors") for r in (tmp_path / "straight", run))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    x, y = (_h5_arrays(r / "outputs.h5") for r in (tmp_path / "straight", run))
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    params = make_train_project(tmp_path, epochs=3)
    cfg = load_config(params, ["train.epochs=1"])
    train("baseline", cfg, tmp_path / "run", live=False)
    before = (tmp_path / "run/checkpoint.pt").read_bytes()

    def full(payload, fh):  # what torch.save raises when the disk fills up
        fh.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534")

    monkeypatch.setattr(checkpoint_module.torch, "save", full)
    cfg3 = load_config(params)
    with pytest.raises(CheckpointError, match="cannot write .*checkpoint.pt.*previous checkpoint"):
        train("baseline", cfg3, tmp_path / "run", live=False)
    assert (tmp_path / "run/checkpoint.pt").read_bytes() == before
    assert not list((tmp_path / "run").glob(".*.tmp"))
    monkeypatch.undo()
    # the space is back: the run continues from epoch 1 to the result of a straight run
    resumed = train("baseline", cfg3, tmp_path / "run", live=False)
    straight = train("baseline", cfg3, tmp_path / "straight", live=False)
    assert resumed == straight


def test_no_space_reservation_names_the_real_reason(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(CheckpointError, match="No space left on device .disk full"):
        checkpoint_module.save_checkpoint(tmp_path / "checkpoint.pt", {"w": torch.ones(3)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_disk_full_during_checkpointing_is_one_line(tmp_path):
    params = make_train_project(tmp_path, epochs=2)
    first = cli("amid-train", "--method", "amid", "--params", str(params), "--out", "run",
                "--set", "train.epochs=1", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "run/checkpoint.pt").read_bytes()

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2,) * 2)

    second = cli("amid-train", "--method", "amid", "--params", str(params), "--out", "run", "-q",
                 cwd=tmp_path, preexec=limit)
    assert_user_error(second, "checkpoint.pt", "disk full", "previous checkpoint is kept")
    assert (tmp_path / "run/checkpoint.pt").read_bytes() == before
