"""Faults during `amid-train`: a full disk while checkpointing (signals at every point of
every method: test_train_resume.py)."""

from __future__ import annotations

import errno
import os
import resource
import signal

import pytest
import torch

import amid.distill.checkpoint as checkpoint_module
from amid.config import load_config
from amid.distill.train import train
from amid.errors import CheckpointError

from .conftest import assert_user_error, cli, make_train_project


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
