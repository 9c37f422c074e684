"""Fuzzing manifests and configuration: every input works or raises the project's own error.

"Works" is checked too: a manifest that loads has unique non-empty ids, known
splits, finite segments and paths inside the root; a configuration that loads
holds only finite numbers. Any exception that is not an AmidError (a pandas,
YAML or h5py error escaping) fails the test with the input that caused it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from amid.config import Config, load_config
from amid.distill.methods import check_method_options, method_options
from amid.errors import AmidError
from amid.extract.extractors import EXTRACTORS, build_extractor
from amid.extract.run import media_items
from amid.manifest import COLUMNS, SPLITS, read_manifest
from amid.schema import to_dict

from .conftest import DEMO_PARAMS

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

# cell values that probe every rule: splits, numbers, paths, separators, encodings
CELLS = st.one_of(
    st.sampled_from(["", " ", "train", "val", "test", "TRAIN", "x", "0", "1", "-1", "1.5",
                     "inf", "nan", "1e400", "../a.wav", "a/../../b.avi", "/abs.avi", "a.avi",
                     "clip.wav", "é", "a,b", 'q"q', "line\nbreak", "\ufeffid", "NA", "null"]),
    st.text(max_size=6),
)
ROWS = st.lists(st.fixed_dictionaries({}, optional={c: CELLS for c in COLUMNS}), max_size=6)


def _check_loaded(manifest) -> None:
    df = manifest.df
    assert df["sample_id"].map(bool).all() and df["sample_id"].is_unique
    assert df["label"].map(bool).all()
    assert df["split"].isin(("", *SPLITS)).all()
    for column in ("start", "end"):
        values = df[column].dropna()
        assert np.isfinite(values.to_numpy(dtype=float)).all()
    for column in ("audio_path", "video_path"):
        for value in df[column]:
            assert not value or (not os.path.isabs(value)
                                 and not os.path.normpath(value).startswith(".."))
    media_items(manifest, "audio")  # what extraction does next with it
    media_items(manifest, "visual")
    for fold in (None, 1):
        for split in SPLITS:
            with contextlib.suppress(AmidError):
                manifest.split_mask(split, fold)


def _load(path: Path, root: Path) -> None:
    for check_media in (False, True):
        try:
            manifest = read_manifest(path, root, check_media=check_media)
        except AmidError as exc:
            assert str(exc).strip()
            continue
        _check_loaded(manifest)


@FUZZ
@given(rows=ROWS, columns=st.lists(st.sampled_from(COLUMNS), unique=True, max_size=9),
       quoted=st.booleans())
def test_fuzzed_manifest_rows(rows, columns, quoted):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a.avi").write_bytes(b"x")
        header = columns or sorted({k for r in rows for k in r})
        buffer = io.StringIO()
        if quoted:
            csv.writer(buffer).writerows([header, *[[r.get(c, "") for c in header]
                                                    for r in rows]])
        else:  # what a hand-edited file looks like: no quoting at all
            buffer.write("\n".join(",".join(x) for x in [header, *[[r.get(c, "") for c in header]
                                                                   for r in rows]]))
        (root / "manifest.csv").write_text(buffer.getvalue(), encoding="utf-8")
        _load(root / "manifest.csv", root)


@FUZZ
@given(data=st.binary(max_size=200), prefix=st.booleans())
def test_fuzzed_manifest_bytes(data, prefix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.csv"
        path.write_bytes((b"sample_id,label,split\n" if prefix else b"") + data)
        _load(path, Path(tmp))


def _dotted_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, f in cls.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            keys += _dotted_keys(f.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


KEYS = _dotted_keys(Config) + [
    "extract.visual.params.grid", "extract.audio.params.n_mels", "extract.text.batch_size",
    "extract.visual", "train", "train.loss.alfa", "train.loss.alpha", "methods.amid.alfa",
    "methods.amid.tau", "methods.kd.weight", "methods.nosuch.x", "nosuch", "train.lr.x", "",
]
VALUES = st.one_of(
    st.integers(-5, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from([".nan", ".inf", "-.inf", "true", "no", "null", "~", "[]", "[1, 2]", "{}",
                     "{a: 1}", "[visual]", "[1", "{", "'x", "!!python/name:os.system", "*a",
                     "&a 1", "1e400", "0", "-0.0", "pca", "amid", "gru", "\"\"", "- a",
                     "../x", "a/b", "..", "-1", str(2**64), "1000000000"]),
    st.text(max_size=8),
)


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(_finite(v) for v in obj)
    return True


@FUZZ
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4))
def test_fuzzed_configuration_values(overrides):
    assignments = [f"{k}={v}" for k, v in overrides]
    try:
        cfg = load_config(DEMO_PARAMS, assignments, check=check_method_options)
    except AmidError as exc:
        assert str(exc).strip()
        return
    assert _finite(to_dict(cfg))
    # names that become path parts stay one level below the folder they are joined to
    for name in (cfg.dataset.name, *cfg.extract, *cfg.sweeps, *cfg.pipeline.methods):
        joined = os.path.normpath(os.path.join("base", name))
        assert os.path.dirname(joined) == "base" and name == os.path.basename(joined), name
    for name, raw in cfg.methods.items():  # every method section typed and finite
        assert _finite(to_dict(method_options(name, raw)))
    for modality, spec in cfg.extract.items():  # what `amid-extract run` builds next
        with contextlib.suppress(AmidError):
            build_extractor(spec.extractor, spec.params, f"extract.{modality}.params")


WEIGHTLESS = ["pixels", "logmel", "hashing"]


@FUZZ
@given(name=st.sampled_from([*WEIGHTLESS, "nosuch"]),
       params=st.dictionaries(st.sampled_from(["grid", "fps", "max_frames", "n_mels", "n_fft",
                                               "hop_length", "pooling", "n_features",
                                               "ngram_max", "lowercase", "f_max", "bogus"]),
                              VALUES.map(yaml.safe_load_all).map(lambda docs: _first(docs)),
                              max_size=3))
def test_fuzzed_extractor_parameters(name, params):
    assert name == "nosuch" or name in EXTRACTORS
    try:
        extractor = build_extractor(name, params, "extract.x.params")
    except AmidError as exc:
        assert str(exc).strip()
        return
    # a configuration that builds must also extract
    loaded = {"pixels": np.zeros((2, 16, 16, 3), np.uint8),
              # padded to one window, as LogMelExtractor.load does
              "logmel": np.sin(np.arange(max(8000, getattr(extractor.params, "n_fft", 0)),
                                         dtype=np.float32)),
              "hashing": "the speaker says one"}[name]
    (features,) = extractor.embed([loaded])
    assert features.ndim == 2 and features.shape[1] == extractor.feature_dim


def _first(docs):
    try:
        return next(iter(docs), None)
    except yaml.YAMLError:
        return "unparsable"
