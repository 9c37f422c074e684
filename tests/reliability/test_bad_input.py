"""Bad input through the command lines: each is exit code 2 and one `error:` line naming it.

Manifests and configuration go through `amid-extract run` / `amid-train`; model
files through `amid-train` (resume) and `amid-evaluate predict`. The typer
CliRunner runs the real commands in-process (a traceback would surface as
`result.exception`); test_extract_faults.py and test_train_faults.py run the
installed console scripts.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from amid.cache import cache_path, read_cache, write_cache
from amid.config import load_config
from amid.distill.cli import app as train_app
from amid.distill.train import train
from amid.evaluate.cli import app as evaluate_app
from amid.extract.cli import app as extract_app

from .conftest import DEMO_PARAMS, assert_user_error, make_project, make_train_project

runner = CliRunner()
HEADER = "sample_id,label,split,video_path,text\n"


def _extract(params: Path, *extra: str):
    return runner.invoke(extract_app, ["run", "-m", "text", "--params", str(params), *extra])


def _train(params: Path, out: Path, *extra: str, method: str = "baseline"):
    return runner.invoke(train_app, ["--method", method, "--params", str(params), "--out",
                                     str(out), "-q", *extra])


# ------------------------------------------------------------------ manifests
GOOD = "a1,one,train,train/one/x.avi,the speaker says one\n"
MANIFESTS = {
    "duplicate ids": (HEADER + GOOD + GOOD.replace("x.avi", "y.avi"),
                      ["duplicate sample_id ['a1'] on line(s) 2, 3"]),
    "empty file": ("", ["the file is empty"]),
    "header only": (HEADER, ["no samples"]),
    "missing label column": ("sample_id,split\na1,train\n", ["missing column(s) label"]),
    "unknown split": (HEADER + GOOD.replace("train,", "training,", 1),
                      ["unknown split value(s) ['training'] on line(s) 2"]),
    "empty label": (HEADER + GOOD.replace(",one,", ",,"), ["label missing on line(s) 2"]),
    "parent path": (HEADER + GOOD.replace("train/one/x.avi", "../../etc/passwd"),
                    ["`video_path` escapes the dataset root", "line(s) 2"]),
    "absolute path": (HEADER + GOOD.replace("train/one/x.avi", "/etc/passwd"),
                      ["`video_path` must be relative", "line(s) 2"]),
    "missing media": (HEADER + GOOD, ["1 media file(s) in `video_path` not found", "line 2"]),
    "infinite end": ("sample_id,label,split,start,end\na1,one,train,0,inf\n",
                     ["`end` must be a number on line(s) 2"]),
    "non-numeric fold": ("sample_id,label,fold\na1,one,one\n",
                         ["`fold` must be an integer on line(s) 2"]),
    # an unquoted comma in a transcript: pandas would shift every column silently
    "ragged row": (HEADER + GOOD.replace("says", "says,") + GOOD.replace("a1", "a2"),
                   ["line(s) 2 have more fields than the 5 of the header"]),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_bad_manifest_is_named(tmp_path, tiny_demo, case):
    text, fragments = MANIFESTS[case]
    params = make_project(tmp_path, tiny_demo)
    (tmp_path / "manifest.csv").write_text(text, encoding="utf-8")
    assert_user_error(_extract(params), "manifest.csv", *fragments)


def test_non_utf8_manifest(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    (tmp_path / "manifest.csv").write_bytes(HEADER.encode() + "a1,caf\xe9,train,,x\n".encode(
        "latin-1"))
    assert_user_error(_extract(params), "manifest.csv: not UTF-8 text")


def test_label_only_in_test_cannot_train(tmp_path):
    params = make_train_project(tmp_path)
    manifest = tmp_path / "manifest.csv"
    text = manifest.read_text().replace("c2_07,class2,test", "c2_07,class9,test")
    manifest.write_text(text)
    result = _train(params, tmp_path / "run")
    assert_user_error(result, "class(es) ['class9'] have no training sample",
                      "appear only in test")


def test_fold_that_does_not_exist(tmp_path):
    params = make_train_project(tmp_path)
    assert_user_error(_train(params, tmp_path / "run", "--set", "dataset.fold=7"),
                      "fold 7 does not exist")


# ---------------------------------------------------------------- configuration
CONFIGS = {
    "unknown key": ("methods.amid.alfa=2", ["unknown configuration key(s) methods.amid.alfa"]),
    "moved key": ("train.loss.alpha=2", ["train.loss.alpha is now per method: methods.ts.alpha"]),
    "unknown section": ("trian.epochs=2", ["unknown configuration key(s) trian"]),
    "wrong type": ("train.epochs=ten", ["train.epochs: expected an integer, got 'ten'"]),
    "float for int": ("train.batch_size=8.5", ["train.batch_size: expected an integer"]),
    "negative weight": ("methods.amid.alpha=-1", ["methods.amid.alpha must be >= 0, got -1.0"]),
    "temperature 0": ("methods.amid.tau=0", ["methods.amid.tau must be > 0, got 0.0"]),
    "infinite lr": ("train.lr=.inf", ["train.lr: expected a finite number"]),
    "nan weight": ("methods.amid.beta=.nan", ["methods.amid.beta: expected a finite number"]),
    "batch size 1": ("train.batch_size=1", ["train.batch_size must be >= 2"]),
    "bad literal": ("train.model.student=transformer", ["train.model.student: must be one of"]),
    "broken yaml": ("train.lr=[1", ["--set train.lr: value '[1' is not valid YAML"]),
    "not a section": ("train.lr.x=1", ["--set train.lr.x: 'lr' is not a section"]),
    "no equals sign": ("train.lr", ["--set train.lr: not of the form key=value"]),
    "dropout 1": ("train.model.dropout=1", ["train.model.dropout must be in [0, 1)"]),
    "target and aux overlap": ("dataset.auxiliary=[visual]", ["share ['visual']"]),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_bad_configuration_is_named(tmp_path, case):
    override, fragments = CONFIGS[case]
    params = make_train_project(tmp_path)
    assert_user_error(_train(params, tmp_path / "run", "--set", override), *fragments)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_yaml_tags_are_never_executed(tmp_path):
    params = make_train_project(tmp_path)
    marker = tmp_path / "pwned"
    override = f"train.lr=!!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path ['{marker}']]"  # noqa: E501
    assert_user_error(_train(params, tmp_path / "run", "--set", override), "not valid YAML")
    text = params.read_text().replace("lr: 0.001", f"lr: {override.split('=', 1)[1]}")
    params.write_text(text)
    assert_user_error(_train(params, tmp_path / "run"), "params.yaml: not valid YAML")
    assert not marker.exists()


def test_unreadable_configuration_files(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    assert_user_error(_train(tmp_path / "folder.yaml", tmp_path / "run"), "cannot be read")
    (tmp_path / "latin.yaml").write_bytes("train:\n  methods: [caf\xe9]\n".encode("latin-1"))
    assert_user_error(_train(tmp_path / "latin.yaml", tmp_path / "run"), "not UTF-8")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert_user_error(_train(tmp_path / "list.yaml", tmp_path / "run"), "expected a mapping")
    assert_user_error(runner.invoke(train_app, ["--method", "nope"]), "unknown method 'nope'")


def test_extractor_parameters_are_checked(tmp_path, tiny_demo):
    params = make_project(tmp_path, tiny_demo)
    assert_user_error(_extract(params, "--set", "extract.text.params.n_features=many"),
                      "extract.text.params.n_features: expected an integer")
    assert_user_error(_extract(params, "--set", "extract.text.extractor=nosuch"),
                      "unknown extractor 'nosuch'")
    assert_user_error(_extract(params, "--set", "extract.text.params={n_feature: 3}"),
                      "unknown parameter(s) n_feature")
    result = runner.invoke(extract_app, ["prepare", "csv", "--root", str(tmp_path), "--out",
                                         str(tmp_path / "m.csv"), "--option", "path=[x"])
    assert_user_error(result, "--option 'path=[x': the value is not valid YAML")


def test_batch_size_larger_than_the_dataset_is_clamped_with_a_warning(tmp_path, caplog):
    params = make_train_project(tmp_path, epochs=1)
    with caplog.at_level(logging.WARNING, logger="amid.distill"):
        history = train("baseline", load_config(params, ["train.batch_size=1000"]),
                        tmp_path / "run", live=False)
    assert len(history) == 1 and (tmp_path / "run/outputs.h5").exists()
    assert "train.batch_size 1000 > 15 training samples: one batch of 15 per epoch" in caplog.text


def test_demo_larger_than_the_digits_is_a_config_error(tmp_path):
    result = runner.invoke(extract_app, ["demo", "--out", str(tmp_path / "d"), "--params",
                                         str(tmp_path / "none.yaml")])
    assert result.exit_code == 0, result.output  # no params file: the defaults work
    result = runner.invoke(extract_app, ["demo", "--out", str(tmp_path / "e"), "--params",
                                         str(DEMO_PARAMS), "--set",
                                         "demo.n_per_class=1000"])
    assert_user_error(result, "demo.n_per_class is 1000", "use at most")


# ------------------------------------------------------------------ caches
def test_nan_and_inf_in_a_cache_are_refused_with_the_sample(tmp_path):
    params = make_train_project(tmp_path)
    path = cache_path(tmp_path / "cache", "synth", "audio", "synthetic")
    cache = read_cache(path)
    seqs = [cache.sequence(k).copy() for k in range(len(cache))]
    seqs[4][1, 2] = np.nan
    seqs[9][0, 0] = np.inf
    write_cache(path, cache.ids, seqs, {"modality": "audio", "extractor": "synthetic",
                                        "model": "none", "params": {}})
    assert_user_error(_train(params, tmp_path / "run"), "audio__synthetic.h5",
                      "2 feature rows are NaN or infinite", f"first in {cache.ids[4]!r}")


def test_a_cache_that_is_not_hdf5(tmp_path):
    params = make_train_project(tmp_path)
    cache_path(tmp_path / "cache", "synth", "text", "synthetic").write_bytes(b"\x89HDF\r\n junk")
    assert_user_error(_train(params, tmp_path / "run"), "text__synthetic.h5",
                      "not a readable HDF5 file")


# -------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    params = make_train_project(root, epochs=1)
    train("amid", load_config(params), root / "run", live=False)
    return root


def _copy_run(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _predict(run: Path, trained: Path, tmp_path: Path):
    visual = cache_path(trained / "cache", "synth", "visual", "synthetic")
    return runner.invoke(evaluate_app, ["predict", str(run), "--cache", f"visual={visual}",
                                        "--out", str(tmp_path / "p.csv")])


class _Touch:
    """A pickle that creates a file when unpickled: the proof it never is."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_of_another_architecture_is_refused(tmp_path, trained):
    shutil.copytree(trained / "run", tmp_path / "run")
    params = trained / "params.yaml"
    result = _train(params, tmp_path / "run", "--set", "train.model.dim=16", method="amid")
    assert_user_error(result, "checkpoint.pt was trained with a different configuration",
                      "train.model.dim")


def test_student_weights_of_another_architecture(tmp_path, trained):
    run = _copy_run(trained, tmp_path)
    shutil.copy(run / "teacher.safetensors", run / "student.safetensors")
    assert_user_error(_predict(run, trained, tmp_path), "student.safetensors",
                      "weights are for another architecture")
    weights = load_file(run / "teacher.safetensors")
    save_file({k: v[..., :1].contiguous() for k, v in weights.items()},
              str(run / "student.safetensors"))
    assert_user_error(_predict(run, trained, tmp_path), "another architecture")


def test_truncated_safetensors(tmp_path, trained):
    run = _copy_run(trained, tmp_path)
    data = (run / "student.safetensors").read_bytes()
    for cut in (0, 7, len(data) // 2, len(data) - 1):
        (run / "student.safetensors").write_bytes(data[:cut])
        assert_user_error(_predict(run, trained, tmp_path), "student.safetensors",
                          "not a readable safetensors file")


def test_pickles_are_refused_never_unpickled(tmp_path, trained):
    run = _copy_run(trained, tmp_path)
    marker = tmp_path / "pwned"
    (run / "student.safetensors").write_bytes(pickle.dumps(_Touch(marker)))
    assert_user_error(_predict(run, trained, tmp_path), "not a readable safetensors file")
    import torch

    torch.save({"method": "amid", "payload": _Touch(marker)}, run / "checkpoint.pt")
    assert_user_error(_train(trained / "params.yaml", run, method="amid"),
                      "checkpoint.pt: cannot be read")
    torch.save([1, 2, 3], run / "checkpoint.pt")  # loads, but is no checkpoint
    assert_user_error(_train(trained / "params.yaml", run, method="amid"),
                      "not an amid-train checkpoint")
    assert not marker.exists()


def test_damaged_metadata_and_outputs(tmp_path, trained):
    run = _copy_run(trained, tmp_path)
    (run / "student.json").write_text("{not json")
    assert_user_error(_predict(run, trained, tmp_path), "student.json: not valid JSON")
    (run / "student.json").write_text('{"arch": {"encoder": {"dim": "x"}}}')
    assert_user_error(_predict(run, trained, tmp_path), "student.json: bad architecture entry")
    data = (run / "outputs.h5").read_bytes()
    (run / "outputs.h5").write_bytes(data[: len(data) // 2])
    result = runner.invoke(evaluate_app, ["run", str(run), "--out", str(tmp_path / "m.json")])
    assert_user_error(result, "outputs.h5")


# ------------------------------------------------------------------- media
def _media_root(tmp_path: Path, demo: Path) -> tuple[Path, dict[str, str]]:
    """A dataset root with one file per kind of damage, and the manifest rows pointing at it."""
    import av
    import soundfile as sf
    from scipy.signal import resample_poly

    root = tmp_path / "root"
    root.mkdir()
    avi = sorted(demo.rglob("*.avi"))[0].read_bytes()
    (root / "good.avi").write_bytes(avi)
    (root / "truncated_early.avi").write_bytes(avi[: len(avi) // 4])
    (root / "truncated_late.avi").write_bytes(avi[: len(avi) * 3 // 5])
    (root / "empty.avi").write_bytes(b"")
    (root / "garbage.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    with av.open(str(root / "no_frames.mkv"), "w", format="matroska") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        c.start_encoding()
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 2) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 523.25 * t) + 0.05 * rng.normal(size=t.size)).astype("f4")
    sf.write(root / "tone16k.wav", tone, 16000)
    sf.write(root / "tone8k.wav", resample_poly(tone, 1, 2).astype("f4"), 8000)
    sf.write(root / "tone44k.wav", resample_poly(tone, 441, 160).astype("f4"), 44100)
    sf.write(root / "zero_length.wav", np.zeros(0, "f4"), 16000)
    sf.write(root / "silent.wav", np.zeros(16000, "f4"), 16000)
    sf.write(root / "ten_samples.wav", tone[:10], 16000)
    sf.write(root / "two_minutes.wav", np.tile(tone, 60), 16000)
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    rows = {  # sample_id -> (audio_path, video_path)
        "good": ("", "good.avi"), "truncated_early": ("", "truncated_early.avi"),
        "truncated_late": ("", "truncated_late.avi"), "empty": ("", "empty.avi"),
        "garbage": ("", "garbage.avi"), "no_frames": ("", "no_frames.mkv"),
        "tone16k": ("tone16k.wav", ""), "tone8k": ("tone8k.wav", ""),
        "tone44k": ("tone44k.wav", ""), "zero_length": ("zero_length.wav", ""),
        "silent": ("silent.wav", ""), "ten_samples": ("ten_samples.wav", ""),
        "two_minutes": ("two_minutes.wav", ""), "corrupt": ("corrupt.wav", ""),
        "past_the_end": ("", "good.avi"),  # a segment after the 0.75 s clip ends
    }
    lines = ["sample_id,label,split,audio_path,video_path,start,end"]
    for sid, (audio, video) in rows.items():
        segment = "5,6" if sid == "past_the_end" else ","
        lines.append(f"{sid},x,train,{audio},{video},{segment}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root, rows


def test_damaged_media_go_to_the_sidecar_and_the_rest_is_extracted(tmp_path, tiny_demo):
    from amid.cache import read_errors
    from amid.extract.extractors import build_extractor
    from amid.extract.run import run_extraction
    from amid.manifest import read_manifest

    root, rows = _media_root(tmp_path, tiny_demo)
    manifest = read_manifest(root / "manifest.csv", root)
    video = run_extraction(manifest, "visual", build_extractor("pixels", {}), tmp_path / "v.h5",
                           progress=False)
    audio = run_extraction(manifest, "audio", build_extractor("logmel", {}), tmp_path / "a.h5",
                           progress=False)
    v_err, a_err = read_errors(video.path), read_errors(audio.path)
    v, a = read_cache(video.path), read_cache(audio.path)
    # every row is in the cache or in its sidecar, never both, never neither
    for cache, errors in ((v, v_err), (a, a_err)):
        assert sorted(cache.ids + list(errors)) == sorted(rows)
    assert set(v.ids) == {"good", "truncated_late"}  # the frames before the cut are kept
    assert len(v.sequence(v.index()["truncated_late"])) < len(v.sequence(v.index()["good"]))
    assert "empty file" in v_err["empty"] and "cannot decode" in v_err["garbage"]
    assert "cannot decode" in v_err["no_frames"] and "cannot decode" in v_err["truncated_early"]
    assert "no audio stream" in a_err["good"]  # the video's soundtrack is the fallback
    assert "zero-length" in a_err["zero_length"] and "silent" in a_err["silent"]
    assert "cannot decode audio file corrupt.wav" in a_err["corrupt"]
    assert "no video frames decoded from good.avi in [5.0, 6.0) s" in v_err["past_the_end"]
    assert {"ten_samples", "two_minutes"} <= set(a.ids)  # padded, and not cut short
    # wrong sample rates are resampled: the same tone gives (nearly) the same features
    ref = a.sequence(a.index()["tone16k"])[0, :40]  # per-band mean log-mel
    for other in ("tone8k", "tone44k"):
        got = a.sequence(a.index()[other])[0, :40]
        bands = slice(0, 30) if other == "tone8k" else slice(0, 40)  # 8 kHz: nothing above 4k
        assert np.corrcoef(ref[bands], got[bands])[0, 1] > 0.99, other
