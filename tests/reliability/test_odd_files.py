"""Odd but legal files and command lines, and damaged ones a reader must not call fine (issue 23).

Cases 10, 11, 13, 14 and 15 of issue 23, and issue 22 item 9. Causes: a
manifest whose rows use `split` and `fold` side by side reached numpy with
pandas' NA (`boolean value of NA is ambiguous`), or lost the rows of the other
kind silently; a Parquet manifest without pyarrow surfaced pandas' ImportError;
the atomic writer's temporary name (`.<name>.<pid>.tmp`) passed the 255-byte
file-name limit for a legal long name; the strict YAML loader checked
duplicate keys by constructing every key, and a merge key (`<<`) has no
constructor of its own; `amid-extract info` checked only the format version;
`-p` was an option of each subcommand only; and a `--set` naming a new
extractor merged into the old extractor's parameters.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from amid.cache import cache_path, write_cache
from amid.config import load_config, read_params
from amid.distill.cli import app as train_app
from amid.errors import ConfigError, ManifestError
from amid.extract.cli import app as extract_app
from amid.manifest import read_manifest
from amid.storage import temporary_name, write_text

from .conftest import DEMO_PARAMS, assert_user_error, make_project, make_train_project

runner = CliRunner()


# -------------------------------------------------- split and fold side by side (case 10)
def _mixed_manifest(root: Path) -> Path:
    """The tiny training set's manifest with class0's rows moved from `split` to `fold`."""
    path = root / "manifest.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    split_at, fold_at = header.index("split"), header.index("fold")
    out = [lines[0]]
    for n, line in enumerate(lines[1:]):
        cells = line.split(",")
        if cells[0].startswith("c0_"):
            cells[split_at], cells[fold_at] = "", str(1 + n % 2)
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")
    return path


def test_rows_with_a_split_among_fold_rows_are_named(tmp_path):
    params = make_train_project(tmp_path, epochs=1)
    _mixed_manifest(tmp_path)
    result = runner.invoke(train_app, ["-m", "baseline", "-p", str(params), "-o",
                                       str(tmp_path / "run"), "-q", "--set", "dataset.fold=1"])
    # class0 (lines 2-9) has folds; classes 1 and 2 (lines 10-25) only a split
    assert_user_error(result, "manifest.csv", "dataset.fold is 1", "no `fold` on line(s) 10, 11")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_fold_rows_among_split_rows_are_named_not_dropped(tmp_path):
    params = make_train_project(tmp_path, epochs=1)
    _mixed_manifest(tmp_path)
    result = runner.invoke(train_app, ["-m", "baseline", "-p", str(params), "-o",
                                       str(tmp_path / "run"), "-q"])
    assert_user_error(result, "manifest.csv", "no `split` on line(s) 2, 3",
                      "set dataset.fold")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_rows_with_both_a_split_and_a_fold_are_fine(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("sample_id,label,split,fold\na,x,train,1\nb,y,test,2\n")
    manifest = read_manifest(path, check_media=False)
    assert manifest.split_mask("train").tolist() == [True, False]
    assert manifest.split_mask("test", fold=1).tolist() == [True, False]


# --------------------------------------------------------- Parquet without pyarrow (case 11)
def test_a_parquet_manifest_without_an_engine_says_what_to_install(tmp_path, tiny_demo,
                                                                   monkeypatch):
    # None in sys.modules makes `import pyarrow` fail, whether or not it is installed
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    (tmp_path / "m.parquet").write_bytes(b"PAR1" + bytes(16) + b"PAR1")
    with pytest.raises(ManifestError) as info:
        read_manifest(tmp_path / "m.parquet", tmp_path)
    assert "m.parquet" in str(info.value) and "pip install pyarrow" in str(info.value)
    assert "\n" not in str(info.value)
    params = make_project(tmp_path, tiny_demo)
    result = runner.invoke(extract_app, ["run", "-m", "text", "-p", str(params), "--set",
                                         f"dataset.manifest={tmp_path / 'm.parquet'}"])
    assert_user_error(result, "m.parquet", "pip install pyarrow")
    assert len(result.output.strip().splitlines()) == 1, result.output


# ------------------------------------------------------- a 250-byte file name (case 13)
LONG = "n" * 246 + ".csv"  # 250 bytes: legal on every common file system (limit 255)


def test_a_long_but_legal_file_name_is_written_atomically(tmp_path):
    target = tmp_path / LONG
    assert len(temporary_name(target).name.encode()) <= 255
    write_text(target, "first\n")
    write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert [p.name for p in tmp_path.iterdir()] == [LONG]  # no temporary left


def test_a_long_names_stale_temporary_is_removed_by_the_next_write(tmp_path):
    import subprocess

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    target = tmp_path / LONG
    stale = temporary_name(target, pid=int(dead.stdout))  # what a killed writer leaves
    stale.write_text("half")
    other = tmp_path / ("m" * 246 + ".csv")  # another long name: its temporaries are its own
    write_text(other, "x")
    assert stale.exists()
    write_text(target, "done\n")
    assert not stale.exists() and target.read_text() == "done\n"


def test_prepare_writes_a_manifest_with_a_long_name(tmp_path, tiny_demo):
    result = runner.invoke(extract_app, ["prepare", "demo", "--root", str(tiny_demo), "--out",
                                         str(tmp_path / LONG), "-p", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert read_manifest(tmp_path / LONG, tiny_demo).ids  # complete and readable


# ------------------------------------------------------------- YAML merge keys (case 14)
def test_yaml_merge_keys_are_read_like_every_yaml_tool_reads_them(tmp_path):
    text = DEMO_PARAMS.read_text()
    plain = yaml.safe_load(text)
    ts, ts_ta = plain["methods"]["ts"], plain["methods"]["ts_ta"]
    merged = yaml.safe_dump({**plain, "methods": {**plain["methods"], "ts": "@TS@",
                                                  "ts_ta": "@TS_TA@"}})
    assert set(ts) <= set(ts_ta)  # ts_ta is ts plus beta, and its own values where they differ
    own = {k: v for k, v in ts_ta.items() if ts.get(k) != v}
    merged = merged.replace("'@TS@'", "&ts " + yaml.safe_dump(ts, default_flow_style=True).strip())
    merged = merged.replace("'@TS_TA@'", "\n    <<: *ts\n" + "".join(
        f"    {k}: {v}\n" for k, v in own.items()).rstrip("\n"))
    (tmp_path / "params.yaml").write_text(merged)
    assert "<<: *ts" in merged
    assert read_params(tmp_path / "params.yaml") == plain
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.methods["ts_ta"] == ts_ta


def test_merge_keys_keep_the_other_yaml_rules(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("base: &b {lr: 1e-3, epochs: 2}\ntrain:\n  <<: *b\n  epochs: 3\n")
    data = read_params(path)
    assert data["train"] == {"lr": 0.001, "epochs": 3} and isinstance(data["train"]["lr"], float)
    path.write_text("base: &b {lr: 1e-3}\ntrain:\n  <<: *b\n  epochs: 3\n  epochs: 4\n")
    with pytest.raises(ConfigError, match="key 'epochs' is given twice"):
        read_params(path)
    path.write_text("train:\n  <<: [1, 2]\n")  # a merge of something that is no mapping
    with pytest.raises(ConfigError, match="p.yaml: not valid YAML"):
        read_params(path)


# ---------------------------------------------------- `info` on a damaged cache (case 15)
def _cache(tmp_path: Path) -> Path:
    path = tmp_path / "visual__synthetic.h5"
    seqs = [np.ones((2, 3), "f4"), np.zeros((1, 3), "f4")]
    write_cache(path, ["a", "b"], seqs, {"modality": "visual", "extractor": "synthetic",
                                         "model": "none", "params": {}})
    return path


@pytest.mark.parametrize("damage, message", [
    ("no offsets", "missing dataset(s) /offsets"),
    ("no features", "missing dataset(s) /features"),
    ("short offsets", "/offsets must have n+1 = 3 entries"),
    ("offsets past the end", "/offsets must be non-decreasing and end at 3"),
])
def test_info_on_a_damaged_cache_says_what_is_wrong(tmp_path, damage, message):
    path = _cache(tmp_path)
    assert runner.invoke(extract_app, ["info", str(path)]).exit_code == 0
    with h5py.File(path, "a") as f:
        if damage == "no offsets":
            del f["offsets"]
        elif damage == "no features":
            del f["features"]
        else:
            values = [0, 2] if damage == "short offsets" else [0, 2, 7]
            del f["offsets"]
            f["offsets"] = np.array(values, np.int64)
    assert_user_error(runner.invoke(extract_app, ["info", str(path)]), str(path), message)


# ------------------------------------------- -p before the subcommand (issue 22 item 9)
def test_params_before_the_subcommand_is_used(tmp_path, tiny_demo, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: only the one given can be read
    (tmp_path / "p").mkdir()
    params = make_project(tmp_path / "p", tiny_demo)
    result = runner.invoke(extract_app, ["-p", str(params), "run", "-m", "text", "-q"])
    assert result.exit_code == 0, result.output
    assert cache_path(tmp_path / "p" / "cache", "demo", "text", "hashing").exists()
    result = runner.invoke(extract_app, ["--params", str(tmp_path / "nope.yaml"), "-S",
                                         "train.epochs=2", "run", "-m", "text"])
    assert_user_error(result, "nope.yaml does not exist")
    # after the subcommand it works as before, and wins over one given before it
    result = runner.invoke(extract_app, ["-p", str(tmp_path / "nope.yaml"), "run", "-m", "text",
                                         "-q", "-p", str(params)])
    assert result.exit_code == 0, result.output


# ------------------------------------------ a new extractor by --set (issue 22 item 9)
def test_a_new_extractor_by_set_starts_from_its_own_defaults(tmp_path, tiny_demo, caplog):
    params = make_project(tmp_path, tiny_demo)
    with caplog.at_level(logging.WARNING, logger="amid.config"):
        cfg = load_config(params, ["extract.audio={extractor: panns-cnn14}"])
    assert cfg.extract["audio"].params == {}
    assert "extract.audio.params" in caplog.text and "'logmel'" in caplog.text
    cfg = load_config(params, ["extract.audio.extractor=panns-cnn14",
                               "extract.audio.params.random_init=true"])
    assert cfg.extract["audio"].params == {"random_init": True}
    cfg = load_config(params, ["extract.audio={extractor: panns-cnn14, params: {seed: 1}}"])
    assert cfg.extract["audio"].params == {"seed": 1}
    # the same extractor keeps merging, as every other section does
    cfg = load_config(params, ["extract.audio={extractor: logmel, params: {n_mels: 8}}"])
    assert cfg.extract["audio"].params == {"sample_rate": 16000, "n_mels": 8, "pooling": "stats"}
    result = runner.invoke(extract_app, ["run", "-m", "audio", "-p", str(params), "-S",
                                         "extract.audio={extractor: panns-cnn14}"])
    assert_user_error(result, "extract.audio.params.checkpoint", "needs the path of a PANNs")
    assert "unknown parameter" not in result.output
