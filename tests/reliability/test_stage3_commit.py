"""Issue 23, stage three: one command's outputs agree with each other; what cannot be
predicted or exported is refused; names follow the path the user gave.

- 2, 2b: amid-predict's CSV and HDF5, and an export's model and metadata JSON, are
  written to temporaries first and renamed together only when every destination can
  be replaced (`amid.storage.replace_together`); each pair records the bytes it belongs
  with (`csv_sha256`, `sha256`), so a pair mixed by a kill between the renames is refused
  by its reader. Cause: each file was replaced on its own, the second after the first.
- 3: `amid-evaluate run` through a symbolic link named its metrics after the link's
  target (`Path.resolve`).
- 6c: the `teacher` method's student was never trained on the target alone.
- 7: a sample with zero feature steps: refused by training, predicted by amid-predict.
- 12: a broken symbolic link in a --media folder was skipped without a word.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import amid.cache as C
from amid.config import load_config
from amid.distill.train import train
from amid.errors import CacheError, OutputError
from amid.evaluate.cli import app, predict_app
from amid.evaluate.export import check_export
from amid.evaluate.newmedia import scan_folder
from amid.evaluate.predict import read_predictions

from .conftest import assert_user_error, cli, make_train_project
from .test_stage3_inputs import make_run
from .test_stage3_writes import write_outputs

runner = CliRunner()


@contextlib.contextmanager
def immutable(path: Path):
    """`chattr +i` for the block (the suite runs as root; the flag is lifted after)."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _fewer(tmp_path: Path, cache: Path, n: int = 3) -> Path:
    """Another cache of the same identity with the first `n` samples: other predictions."""
    part = C.read_cache(cache)
    return C.write_cache(tmp_path / "fewer.h5", part.ids[:n],
                         [part.sequence(k) for k in range(n)],
                         {**C.identity_of(part.attrs), "feature_dim": part.feature_dim})


@pytest.mark.slow
def test_a_kill_between_the_two_renames_leaves_a_pair_the_reader_refuses(tmp_path,
                                                                        monkeypatch):
    run, _, cache = make_run(tmp_path)
    out = tmp_path / "preds" / "p.csv"
    # the runs before and after the kill in this process (the kill needs its own)
    first = runner.invoke(predict_app, [str(run), "-o", str(out)])
    assert first.exit_code == 0, first.output
    table, arrays = read_predictions(out)  # a pair written together reads back
    assert list(table["predicted"]) == [s.decode() if isinstance(s, bytes) else s
                                        for s in arrays["predicted"]]
    monkeypatch.setenv("AMID_FAULT", "replaced-one")  # SIGKILL after the HDF5's rename
    killed = cli("amid-predict", str(run), "-c", f"visual={_fewer(tmp_path, cache)}",
                 "-o", str(out), cwd=tmp_path)
    monkeypatch.delenv("AMID_FAULT")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with pytest.raises(OutputError, match=r"p\.h5 was not written with .*p\.csv"):
        read_predictions(out)  # 3 rows in the HDF5, 6 in the CSV: told apart, not mixed
    again = runner.invoke(predict_app, [str(run), "-o", str(out)])
    assert again.exit_code == 0, again.output
    assert len(read_predictions(out)[0]) == 6


def test_an_immutable_csv_is_refused_before_the_hdf5_is_replaced(tmp_path):
    run, _, cache = make_run(tmp_path)
    out = tmp_path / "p.csv"
    assert runner.invoke(predict_app, [str(run), "-o", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out, out.with_suffix(".h5"))}
    with immutable(out):
        result = runner.invoke(predict_app, [str(run), "-c", f"visual={_fewer(tmp_path, cache)}",
                                             "-o", str(out)])
    assert_user_error(result, "cannot write", "p.csv", "immutable")
    assert {p.name: p.read_bytes() for p in (out, out.with_suffix(".h5"))} == before
    assert not list(tmp_path.glob(".p.*.tmp"))


def test_an_immutable_export_json_is_refused_before_the_model_is_replaced(tmp_path):
    run, _, _ = make_run(tmp_path)
    out = tmp_path / "s.pt"
    assert runner.invoke(app, ["export", str(run), "-o", str(out)]).exit_code == 0
    meta = Path(f"{out}.json")
    assert check_export(out)["target"] == ["visual"]  # the JSON names the model's bytes
    out.write_bytes(out.read_bytes() + b"\0")  # a model the metadata does not describe
    with pytest.raises(OutputError, match="does not describe"):
        check_export(out)
    before = {p.name: p.read_bytes() for p in (out, meta)}
    with immutable(meta):
        result = runner.invoke(app, ["export", str(run), "-o", str(out)])
    assert_user_error(result, "cannot write", "s.pt.json", "immutable")
    assert {p.name: p.read_bytes() for p in (out, meta)} == before


def test_evaluate_run_through_a_symlink_is_named_after_the_link(tmp_path, monkeypatch):
    write_outputs(tmp_path / "runs" / "real" / "outputs.h5")
    (tmp_path / "runs" / "amid").symlink_to(tmp_path / "runs" / "real")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["run", "runs/amid"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "metrics" / "amid.json").is_file()  # the name given, not "real"
    assert not (tmp_path / "metrics" / "real.json").exists()


def test_predict_and_export_refuse_a_teacher_run(tmp_path):
    params = make_train_project(tmp_path, epochs=1)
    train("teacher", load_config(params), tmp_path / "teacher", live=False)
    for args in (["export", str(tmp_path / "teacher"), "-o", str(tmp_path / "t.pt")],
                 ["export", str(tmp_path / "teacher"), "--format", "onnx",
                  "-o", str(tmp_path / "t.onnx")]):
        assert_user_error(runner.invoke(app, args), "`teacher` method", "never trained")
    result = runner.invoke(predict_app, [str(tmp_path / "teacher"), "-o",
                                         str(tmp_path / "t.csv")])
    assert_user_error(result, "`teacher` method", "never trained")
    assert not list(tmp_path.glob("t.*"))
    assert json.loads((tmp_path / "teacher" / "student.json").read_text())["trained"] is False
    train("baseline", load_config(params), tmp_path / "baseline", live=False)  # a student's
    assert json.loads((tmp_path / "baseline" / "student.json").read_text())["trained"] is True


def test_predict_refuses_a_sample_without_feature_steps_as_training_does(tmp_path):
    run, _, cache = make_run(tmp_path)
    part = C.read_cache(cache)
    seqs = [part.sequence(k) for k in range(len(part.ids))]
    seqs[2] = seqs[2][:0]  # (0, D): nothing to read
    empty = C.write_cache(tmp_path / "empty.h5", part.ids, seqs,
                          {**C.identity_of(part.attrs), "feature_dim": part.feature_dim})
    result = runner.invoke(predict_app, [str(run), "-c", f"visual={empty}",
                                         "-o", str(tmp_path / "p.csv")])
    assert_user_error(result, "empty.h5", "1 sample(s) have no feature steps",
                      repr(part.ids[2]))
    assert not (tmp_path / "p.csv").exists()
    from amid.distill.features import pad_sequences  # training pads through the same rule

    with pytest.raises(CacheError, match="no feature steps"):
        pad_sequences(C.read_cache(empty), np.arange(len(seqs)))


def test_a_broken_symlink_in_a_media_folder_is_named(tmp_path, caplog):
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "good.txt").write_text("a transcript")
    (folder / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    with caplog.at_level(logging.WARNING):
        manifest = scan_folder(folder, ["text"])
    assert list(manifest["sample_id"]) == ["good"]
    assert "gone.txt" in caplog.text and "broken symbolic link" in caplog.text
