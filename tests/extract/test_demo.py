"""The embedded demo: deterministic raw media whose auxiliary modalities carry the label."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from amid.extract.demo import WORDS, DemoSpec, make_demo, tone_frequency
from amid.extract.media import load_video
from amid.manifest import read_manifest


def test_layout_and_manifest(small_demo):
    m = read_manifest(small_demo / "manifest.csv", small_demo)  # checks every media file
    assert len(m) == 100 and m.classes == sorted(WORDS)
    assert m.df["split"].value_counts().to_dict() == {"train": 60, "val": 20, "test": 20}
    row = m.df.iloc[0]
    assert row.video_path == f"{row.split}/{row.label}/{row.sample_id}.avi"
    frames = load_video(small_demo / row.video_path, fps=None)
    assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8


def test_same_seed_same_bytes(tmp_path, small_demo):
    make_demo(tmp_path, DemoSpec(n_per_class=10))
    files = sorted(p.relative_to(small_demo) for p in small_demo.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert all((tmp_path / f).read_bytes() == (small_demo / f).read_bytes() for f in files)


def test_audio_pitch_encodes_label_mod_5(small_demo):
    m = read_manifest(small_demo / "manifest.csv", small_demo)
    hits = 0
    for _, row in m.df.iterrows():
        wave, sr = sf.read(small_demo / row.audio_path)
        spectrum = np.abs(np.fft.rfft(wave))
        peak = np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()]
        hits += abs(peak - tone_frequency(WORDS.index(row.label))) < 10
    assert hits == len(m)  # the tone stands out of the noise in every clip


def test_transcripts_name_the_digit_mostly(small_demo):
    m = read_manifest(small_demo / "manifest.csv", small_demo)
    said = m.df["text"].str.split().str[-1]
    agree = (said == m.df["label"]).mean()
    # text_noise = 0.3 replaces the word by a random one (right by chance 1 in 10)
    assert 0.55 < agree < 0.9


def test_label_noise_relabels_only_training_annotations(tmp_path, small_demo):
    """label_noise: a training sample is filed under a wrong class, its media unchanged
    (the id keeps the true digit's word); validation and test keep their true labels."""
    noisy = make_demo(tmp_path, DemoSpec(n_per_class=10, label_noise=0.5))
    clean = read_manifest(small_demo / "manifest.csv", small_demo).df.set_index("sample_id")
    noisy = noisy.set_index("sample_id")
    assert list(noisy.index) == list(clean.index)
    truth = noisy.index.str.split("_").str[0]  # `three_0123`: the digit the media show
    wrong = noisy["label"] != truth
    assert not wrong[noisy["split"] != "train"].any()
    assert 0.3 < wrong[noisy["split"] == "train"].mean() < 0.7  # about half of 60
    assert (clean["label"] == clean.index.str.split("_").str[0]).all()
    for sid in noisy.index[wrong][:3]:  # the same media, filed elsewhere
        a = tmp_path / noisy.at[sid, "video_path"]
        b = small_demo / clean.at[sid, "video_path"]
        assert a.parent.name != b.parent.name and a.read_bytes() == b.read_bytes()
