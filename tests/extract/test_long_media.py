"""Memory that does not grow with the clip: long media streamed, absurd inputs refused early.

Issue 14 item 15. Causes: every extractor decoded a whole clip (a 2 h wav
peaked at 4 GB), a header's sample rate was believed (a 16 KB wav claiming
1 Hz was resampled into 4 GB), and `import-ucf51` read each archive member
whole before looking at it (a 2.9 MB tar bomb reached 5.9 GB). Here the
thresholds are lowered so short clips take the streaming path, whose
features must equal the whole-clip path's; `bench/extract.py` measures the
peak memory of 10 s, 2 h and 4 h clips.
"""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import media_gen as gen  # tests/extract/fixtures, on pytest's pythonpath
import numpy as np
import pytest

import amid.extract.extractors.long as long
from amid.errors import CacheError, MediaError
from amid.extract.audio import load_audio
from amid.extract.extractors import build_extractor
from amid.extract.extractors import panns as panns_module
from amid.extract.extractors.base import MediaItem
from amid.extract.importers import read_npy_archive


@pytest.fixture
def noisy_wav(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(44100 * 9.3)) / 44100
    wave = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(len(t))
    return gen.write_wav(tmp_path / "long.wav", wave.astype(np.float32), 44100)


def _both(extractor, item: MediaItem, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """Features on the whole-clip path, then streamed in 0.7 s blocks."""
    whole = extractor.embed([extractor.load(item)])[0]
    monkeypatch.setattr(long, "LONG_SECONDS", 1.0)
    monkeypatch.setattr(long, "BLOCK_SECONDS", 0.7)
    monkeypatch.setattr(long, "LONG_FRAMES", 4)
    loaded = extractor.load(item)
    assert isinstance(loaded, long.LongAudio | long.LongVideo)
    return whole, extractor.embed([loaded])[0]


@pytest.mark.parametrize("params", [{"pooling": "stats"}, {"pooling": "none", "n_fft": 401,
                                                          "hop_length": 97}])
def test_logmel_streamed_equals_whole_and_holds_one_block(noisy_wav, monkeypatch, params):
    extractor = build_extractor("logmel", params)
    item = MediaItem("a", noisy_wav, start=0.9, end=8.8)  # resampled 44.1 -> 16 kHz, a segment
    largest = []
    mel = extractor._mel_slice
    monkeypatch.setattr(extractor, "_mel_slice", lambda x: largest.append(len(x)) or mel(x))
    whole, streamed = _both(extractor, item, monkeypatch)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=2e-5)
    # never more than about a block of samples at once (0.7 s at 16 kHz, plus one window)
    assert len(largest) > 5 and max(largest) <= 0.7 * 16000 + 64 * 160 + 400


@pytest.mark.parametrize("params", [{}, {"window_seconds": 2.0, "hop_seconds": 1.5}])
def test_cnn14_streamed_equals_whole(noisy_wav, monkeypatch, params):
    extractor = build_extractor("panns-cnn14-emb512", {"random_init": True, "sample_rate": 16000,
                                                        "window_size": 512, "hop_size": 160,
                                                        "fmax": 8000.0, **params})
    monkeypatch.setattr(panns_module, "CORE_FRAMES", 320)  # several trunk pieces per clip
    whole, streamed = _both(extractor, MediaItem("a", noisy_wav), monkeypatch)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6 * np.abs(whole).max() + 1e-9)


def test_long_videos_are_streamed_frame_batches(tmp_path, monkeypatch):
    video = gen.write_video(tmp_path / "v.avi", n_frames=40, rate=10, size=(48, 64))
    for name, params in (("pixels", {"grid": 4}),
                         ("densenet", {"model": "test_resnet", "random_init": True,
                                       "fps": 5.0})):
        extractor = build_extractor(name, params)
        monkeypatch.setattr(long, "LONG_FRAMES", 10**9)
        whole = extractor.embed([extractor.load(MediaItem("v", video))])[0]
        monkeypatch.setattr(long, "LONG_FRAMES", 4)
        if name == "densenet":
            monkeypatch.setattr(extractor, "frame_batch", 3)
        loaded = extractor.load(MediaItem("v", video))
        assert isinstance(loaded, long.LongVideo)
        np.testing.assert_allclose(extractor.embed([loaded])[0], whole, atol=1e-5)


def _wav_header(rate: int, channels: int, frames: int) -> bytes:
    data = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2,
                        16) + b"data" + struct.pack("<I", data))


def test_implausible_headers_are_refused_before_decoding(tmp_path):
    one_hz = tmp_path / "one_hz.wav"
    one_hz.write_bytes(_wav_header(1, 1, 8000) + bytes(16000))  # 16 KB claiming 1 Hz
    with pytest.raises(MediaError) as err:
        load_audio(one_hz, 16000)
    assert str(err.value) == ("one_hz.wav: the header says sample rate 1 Hz, not plausible for "
                              "audio (expected 1000 to 768000 Hz); not decoded")
    extractor = build_extractor("logmel", {})
    with pytest.raises(MediaError, match="one_hz.wav: the header says sample rate 1 Hz"):
        extractor.load(MediaItem("a", one_hz))
    many = tmp_path / "many.wav"
    many.write_bytes(_wav_header(16000, 1000, 4) + bytes(8000))
    with pytest.raises(MediaError, match="many.wav: the header says 1000 channels"):
        load_audio(many, 16000)




def test_archive_members_are_checked_before_they_are_read(tmp_path, monkeypatch):
    good = gen.npy_bytes(np.ones(512, np.float32))
    bomb = gen.tar_gz(tmp_path / "bomb.tar.gz", {"A/v_A_g01_c01.npy": good,
                                           "A/v_A_g01_c02.npy": bytes(200 * 2**20)})
    assert bomb.stat().st_size < 2**20  # 200 MB of zeros compress to a few hundred KB
    read = []
    real = tarfile.ExFileObject.read
    monkeypatch.setattr(tarfile.ExFileObject, "read",
                        lambda self, size=-1: read.append(size) or real(self, size))
    with pytest.raises(CacheError) as err:
        read_npy_archive(bomb, 512)
    assert str(err.value) == (f"{bomb}: A/v_A_g01_c02.npy declares {200 * 2**20} bytes, more "
                              "than a (512,) .npy holds (8192); not read")
    assert max(read) == len(good)  # only the good member's bytes were read
    # a small member whose header claims a huge array
    liar = io.BytesIO()
    np.lib.format.write_array_header_1_0(liar, {"descr": "<f4", "fortran_order": False,
                                                "shape": (10**10,)})
    lying = gen.tar_gz(tmp_path / "liar.tar.gz",
                 {"A/v_A_g01_c01.npy": liar.getvalue() + bytes(2048)})
    with pytest.raises(CacheError) as err:
        read_npy_archive(lying, 512)
    assert str(err.value) == (f"{lying}: A/v_A_g01_c01.npy holds shape (10000000000,) float32 "
                              "(expected (512,) numbers)")

