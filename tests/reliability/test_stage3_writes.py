"""Every file stage three writes is replaced atomically; a failed write is one line.

Issue 14 items 10 and 11. Cause: metrics, plot CSVs, report pages and
figures, predictions and exports were written in place (or through torch's
and ONNX's own file writers), so a full disk, a read-only folder or a kill
left truncated files, stray temporaries, raw OSError tracebacks or a SIGABRT.
Every writer now renders in memory and goes through
`amid.storage.replace_atomically` (space reserved first), so the previous good
file survives and the error names the file.

A read-only folder is simulated at the OS boundary (`os.open`, `open`,
`mkdir`, `rename`, `unlink`, h5py), raising EROFS exactly as a read-only
mount does, because the suite runs as root here, where permission bits do
not stop writes. A full disk is a real file-size limit (RLIMIT_FSIZE) in a
subprocess.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import resource
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from amid.evaluate.cli import app, predict_app

from .conftest import assert_user_error, cli
from .test_stage3_inputs import make_run

runner = CliRunner()


def write_outputs(path: Path, n_test: int = 12, method: str = "amid") -> Path:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs.update(classes=json.dumps([f"c{k}" for k in range(8)]), method=method,
                       dataset="toy", fold="null", seed=0)
        for split, n in (("train", 40), ("test", n_test)):
            g = f.create_group(split)
            g.create_dataset("ids", data=[f"{split}{k}" for k in range(n)],
                             dtype=h5py.string_dtype())
            g["labels"] = np.arange(n) % 8
            g["student/embeddings"] = rng.normal(size=(n, 6)).astype(np.float32)
            g["student/logits"] = rng.normal(size=(n, 8)).astype(np.float32)
    return path


class ReadOnly:
    """Writes below `folder` fail with EROFS, as on a read-only mount."""

    def __init__(self, folder: Path, monkeypatch) -> None:
        self.folder = os.path.realpath(folder)
        real_open, real_os_open, real_h5 = builtins.open, os.open, h5py.File

        def fake_open(file, mode="r", *args, **kwargs):
            if not isinstance(file, int) and set(mode) & set("wax+"):
                self.check(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                self.check(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_h5(name, mode="r", *args, **kwargs):
            if mode != "r" and not isinstance(name, io.IOBase):
                self.check(name)
            return real_h5(name, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(h5py, "File", fake_h5)
        for name in ("mkdir", "unlink", "remove", "rmdir"):
            monkeypatch.setattr(os, name, self.guard(getattr(os, name)))
        for name in ("replace", "rename"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, lambda src, dst, *a, _r=real, **k: (
                self.check(src), self.check(dst), _r(src, dst, *a, **k))[-1])

    def guard(self, real):
        return lambda path, *a, **k: (self.check(path), real(path, *a, **k))[-1]

    def check(self, path) -> None:
        full = os.path.realpath(os.fsdecode(path))
        if full == self.folder or full.startswith(self.folder + os.sep):
            raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _prepare(tmp_path: Path) -> dict[str, list[str]]:
    """Inputs outside `ro/`, one earlier good output of each command inside it."""
    write_outputs(tmp_path / "runs" / "base" / "outputs.h5")
    run, _, cache = make_run(tmp_path / "trained")
    sweep = tmp_path / "runs" / "sweep"
    write_outputs(sweep / "seed=0" / "outputs.h5")
    (sweep / "sweep.json").write_text(json.dumps({"method": "amid", "members": [
        {"name": "seed=0", "overrides": {"train.seed": 0}}]}))
    ro = tmp_path / "ro"
    commands = {
        "run": ["run", str(tmp_path / "runs" / "base"), "-o", str(ro / "base.json")],
        "summarize": ["summarize", str(ro / "base.json"), "-o", str(ro / "summary.json")],
        "sweep": ["sweep", str(sweep), "-o", str(ro / "sweeps" / "alpha.json")],
        "report": ["report", "-m", str(ro / "base.json"), "--runs", str(tmp_path / "runs"),
                   "-o", str(ro / "reports")],
        "export torchscript": ["export", str(run), "-o", str(ro / "s.pt")],
        "export onnx": ["export", str(run), "--format", "onnx", "-o", str(ro / "s.onnx")],
        "predict": ["predict", str(run), "-o", str(ro / "p.csv")],
    }
    for args in commands.values():  # the earlier, good outputs
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return commands


def test_read_only_output_folder_is_one_line_error_for_every_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    commands = _prepare(tmp_path)
    before = _snapshot(tmp_path / "ro")
    ReadOnly(tmp_path / "ro", monkeypatch)
    for name, args in commands.items():
        result = runner.invoke(app, args)
        assert_user_error(result, str(tmp_path / "ro"), "Read-only file system")
        assert len(result.output.strip().splitlines()) == 1, (name, result.output)
    assert_user_error(runner.invoke(predict_app, commands["predict"][1:]),
                      "amid-predict: error: cannot write", "Read-only file system")
    monkeypatch.undo()
    assert _snapshot(tmp_path / "ro") == before  # nothing lost, nothing half-written


def test_out_naming_the_run_folder_writes_nothing_into_it(tmp_path):
    run = tmp_path / "runs" / "base"
    write_outputs(run / "outputs.h5")
    before = _snapshot(run)
    for out in (run, run.with_suffix(".json")):  # the folder itself, or its plot folder
        result = runner.invoke(app, ["run", str(run), "--out", str(out)])
        assert_user_error(result, f"--out {out}")
        assert _snapshot(run) == before
    assert not run.with_suffix(".json").exists()


def _fsize_limit(limit: int):
    def apply() -> None:
        # SIGXFSZ ignored: a write past the limit fails with EFBIG (as on a full disk)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _strays(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_disk_full_during_export_keeps_the_good_file(tmp_path, fmt):
    run, _, _ = make_run(tmp_path)
    out = tmp_path / "exports" / f"student.{fmt}"
    # the good file: the command in this process (its process boundary is not the point;
    # the file-size limit needs the second run's own process)
    first = runner.invoke(app, ["export", str(run), "--format", fmt, "-o", str(out)])
    assert first.exit_code == 0, first.output
    good, meta = out.read_bytes(), Path(f"{out}.json").read_bytes()
    full = cli("amid-evaluate", "export", str(run), "--format", fmt, "-o", str(out),
               cwd=tmp_path, preexec=_fsize_limit(len(good) // 2))
    # not SIGABRT (-6) from torch's zip writer: one line naming the file
    assert_user_error(full, f"cannot write {out}", "disk full")
    assert out.read_bytes() == good and Path(f"{out}.json").read_bytes() == meta
    assert _strays(tmp_path / "exports") == []


@pytest.mark.slow
def test_disk_full_during_evaluate_run_leaves_no_temporary(tmp_path):
    write_outputs(tmp_path / "runs" / "base" / "outputs.h5", n_test=300)
    out = tmp_path / "metrics" / "base.json"
    full = cli("amid-evaluate", "run", str(tmp_path / "runs" / "base"), "-o", str(out),
               cwd=tmp_path, preexec=_fsize_limit(2000))
    assert_user_error(full, "cannot write", "confusion.csv", "disk full")
    assert _strays(tmp_path / "metrics") == [] and not out.exists()


@pytest.mark.slow
def test_killed_while_writing_predictions_keeps_the_previous_csv(tmp_path, monkeypatch):
    run, _, cache = make_run(tmp_path)
    out = tmp_path / "preds" / "p.csv"
    # the runs around the kill and the full disk in this process: only those two need one
    # of their own (each console script costs seconds of CPU importing torch)
    first = runner.invoke(predict_app, [str(run), "-o", str(out)])
    assert first.exit_code == 0, first.output
    good = out.read_bytes()
    # another cache of the same identity, 3 of the 6 clips: another CSV
    import amid.cache as C

    part = C.read_cache(cache)
    fewer = C.write_cache(tmp_path / "fewer.h5", part.ids[:3],
                          [part.sequence(k) for k in range(3)],
                          {**C.identity_of(part.attrs), "feature_dim": part.feature_dim})
    good_h5 = out.with_suffix(".h5").read_bytes()
    monkeypatch.setenv("AMID_FAULT", "predictions-csv-written")  # SIGKILL before the renames
    killed = cli("amid-predict", str(run), "-c", f"visual={fewer}", "-o", str(out),
                 cwd=tmp_path)
    monkeypatch.delenv("AMID_FAULT")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert out.read_bytes() == good  # the complete previous CSV, not part of the new one,
    assert out.with_suffix(".h5").read_bytes() == good_h5  # and its own HDF5 beside it
    assert len(_strays(out.parent)) == 2  # the killed writer's temporaries ...
    again = runner.invoke(predict_app, [str(run), "-c", f"visual={fewer}", "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert _strays(out.parent) == []  # ... is removed by the next write
    assert len(out.read_text().splitlines()) == 1 + 3
    full = cli("amid-predict", str(run), "-o", str(out), cwd=tmp_path,
               preexec=_fsize_limit(1000))
    assert_user_error(full, "cannot write", "disk full")
    assert len(out.read_text().splitlines()) == 1 + 3 and _strays(out.parent) == []
