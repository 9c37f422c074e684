"""The weightless demo extractors against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from amid.errors import ConfigError
from amid.extract.demo import write_video
from amid.extract.extractors import MediaError, MediaItem, build_extractor


def test_pixels_is_grey_block_average(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    frames[..., 1] = frames[..., 0]  # grey frames survive YUV 4:2:0 round trips best
    frames[..., 2] = frames[..., 0]
    write_video(tmp_path / "v.avi", frames)
    ex = build_extractor("pixels", {"grid": 4})
    (feats,) = ex.embed([ex.load(MediaItem("v", tmp_path / "v.avi"))])
    decoded = ex.load(MediaItem("v", tmp_path / "v.avi")).astype(np.float64)
    grey = decoded.mean(-1) / 255.0
    expected = grey.reshape(3, 4, 8, 4, 8).mean(axis=(2, 4)).reshape(3, 16)
    assert feats.shape == (3, 16) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, expected, atol=1e-6)
    # and the codec keeps the block means close to the frames we encoded
    np.testing.assert_allclose(
        feats,
        (frames[..., 0] / 255.0).reshape(3, 4, 8, 4, 8).mean(axis=(2, 4)).reshape(3, 16),
        atol=0.05,
    )


def test_logmel_peaks_at_the_tone_band(tmp_path):
    sr = 16000
    t = np.arange(sr) / sr
    sf.write(tmp_path / "a.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr)
    seq_ex = build_extractor("logmel", {"pooling": "none", "n_mels": 40})
    stats_ex = build_extractor("logmel", {"pooling": "stats", "n_mels": 40})
    item = MediaItem("a", tmp_path / "a.wav")
    (seq,) = seq_ex.embed([seq_ex.load(item)])
    (stats,) = stats_ex.embed([stats_ex.load(item)])
    assert seq.shape == (101, 40) and stats.shape == (1, 80)
    np.testing.assert_allclose(stats[0, :40], seq.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats[0, 40:], seq.std(0), rtol=1e-4, atol=1e-4)
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, 40, sr)  # (freq, mel)
    expected_band = int(fb[int(round(1000 / (sr / 400)))].argmax())
    assert abs(int(seq.mean(0).argmax()) - expected_band) <= 1


def test_logmel_pads_clips_shorter_than_a_window(tmp_path):
    sf.write(tmp_path / "short.wav", np.full(50, 0.1), 16000)
    ex = build_extractor("logmel", {})
    (feats,) = ex.embed([ex.load(MediaItem("s", tmp_path / "short.wav"))])
    assert feats.shape == (1, 80) and np.isfinite(feats).all()


def test_hashing_is_a_normalised_bag_of_words():
    ex = build_extractor("hashing", {"n_features": 64})
    a, b, c = ex.embed(["one two", "two one", "one one two"])
    np.testing.assert_allclose(a, b)  # order does not matter
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert not np.allclose(a, c)  # counts do
    with pytest.raises(MediaError, match="empty transcript"):
        ex.load(MediaItem("x", text=None))


def test_unknown_extractor_and_parameter_are_named():
    with pytest.raises(ConfigError, match="unknown parameter\\(s\\) grd for extractor 'pixels'"):
        build_extractor("pixels", {"grd": 4}, where="extract.visual.params")
    with pytest.raises(ConfigError, match="extract.audio.params.n_mels: expected an integer"):
        build_extractor("logmel", {"n_mels": "many"}, where="extract.audio.params")
    from amid.errors import AmidError

    with pytest.raises(AmidError, match="unknown extractor 'pixles'; known: .*pixels"):
        build_extractor("pixles", {})
