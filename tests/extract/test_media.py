"""Decoding of generated media: sample-exact audio segments, downmix, resampling,
frame sampling by timestamp, and every kind of broken file as a MediaError."""

from __future__ import annotations

from pathlib import Path

import media_gen as gen  # tests/extract/fixtures, on pytest's pythonpath
import numpy as np
import pytest

from amid.extract.extractors.base import MediaError
from amid.extract.media import load_audio, load_video

# --------------------------------------------------------------------- audio files


def test_wav_segment_is_sample_exact(tmp_path: Path) -> None:
    rate = 8000
    ramp = (np.arange(rate * 2) / (rate * 2)).astype(np.float32)
    path = gen.write_wav(tmp_path / "ramp.wav", ramp, rate)
    np.testing.assert_array_equal(load_audio(path, rate), ramp)
    part = load_audio(path, rate, start=0.25, end=0.5)
    np.testing.assert_array_equal(part, ramp[2000:4000])
    # only a start: to the end of the file
    np.testing.assert_array_equal(load_audio(path, rate, start=1.5), ramp[12000:])


def test_stereo_is_averaged_to_mono_and_flac_reads(tmp_path: Path) -> None:
    rate = 8000
    left = gen.tone(0.5, rate, 440.0)
    right = gen.tone(0.5, rate, 1000.0, amp=0.25)
    stereo = np.stack([left, right], axis=1)
    for name, subtype in (("s.wav", "FLOAT"), ("s.flac", "PCM_24")):
        wave = load_audio(gen.write_wav(tmp_path / name, stereo, rate, subtype), rate)
        assert wave.dtype == np.float32 and wave.shape == (4000,)
        np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)


def test_resampling_keeps_duration_and_pitch(tmp_path: Path) -> None:
    path = gen.write_wav(tmp_path / "t.wav", gen.tone(1.0, 44100, 1000.0), 44100)
    wave = load_audio(path, 16000)
    assert wave.shape == (16000,)
    assert abs(gen.dominant_frequency(wave, 16000) - 1000.0) < 2.0
    # a tone above the new Nyquist frequency is filtered out, not aliased
    high = gen.write_wav(tmp_path / "h.wav", gen.tone(1.0, 44100, 12000.0), 44100)
    assert np.abs(load_audio(high, 16000)[1000:-1000]).max() < 0.02


def test_audio_track_of_mp4_with_segment(tmp_path: Path) -> None:
    rate = 22050
    audio = np.stack([gen.tone(2.0, rate, 440.0), gen.tone(2.0, rate, 440.0)])
    path = gen.write_video(tmp_path / "v.mp4", n_frames=20, rate=10, codec="h264",
                           audio=audio, audio_rate=rate)
    wave = load_audio(path, 16000)
    # AAC pads the last frame: the track is at least the written length, < 0.1 s more
    assert 32000 <= len(wave) < 32000 + 1600
    assert abs(gen.dominant_frequency(wave, 16000) - 440.0) < 3.0
    full = load_audio(path, rate)
    # a segment late enough that the decoder seeks: the same stretch as the full decode
    for start, end in ((0.25, 0.5), (1.2, 1.95)):
        part = load_audio(path, rate, start=start, end=end)
        expect = full[round(start * rate) : round(end * rate)]
        assert abs(len(expect) - (end - start) * rate) <= 1
        np.testing.assert_allclose(part, expect, atol=1e-4)


# --------------------------------------------------------------------- video frames


def test_frames_sampled_by_timestamp(tmp_path: Path) -> None:
    for name, codec in (("v.avi", "mpeg4"), ("v.mkv", "h264")):
        path = gen.write_video(tmp_path / name, n_frames=20, rate=10, codec=codec)
        every = load_video(path, fps=None)
        assert every.shape == (20, 32, 48, 3) and every.dtype == np.uint8
        # 4 fps over a 2 s clip: targets 0, .25, ..., 1.75 s show frames floor(t * 10)
        sampled = load_video(path, fps=4)
        expect = [gen.frame_level(int(k * 0.25 * 10 + 1e-9)) for k in range(8)]
        np.testing.assert_allclose(sampled[:, 16, 24, 0], expect, atol=6)
        # a segment: targets .55, .80, 1.05, 1.30 (1.55 is past the end)
        part = load_video(path, fps=4, start=0.55, end=1.5)
        np.testing.assert_allclose(part[:, 16, 24, 0], [gen.frame_level(i) for i in (5, 8, 10, 13)],
                                   atol=6)
        # faster than the source: frames repeat (each 0.1 s frame covers two 20 fps targets)
        fast = load_video(path, fps=20, max_frames=6)
        levels = [gen.frame_level(i) for i in (0, 0, 1, 1, 2, 2)]
        np.testing.assert_allclose(fast[:, 0, 0, 0], levels, atol=6)


# --------------------------------------------------------------------- failures


def _raises(fn, *args, match: str, **kwargs) -> None:
    with pytest.raises(MediaError, match=match):
        fn(*args, **kwargs)


def test_broken_media_raise_media_error(tmp_path: Path) -> None:
    _raises(load_audio, tmp_path / "absent.wav", 16000, match="not found")
    _raises(load_video, tmp_path / "absent.avi", 2.0, match="not found")
    (tmp_path / "empty.mp4").write_bytes(b"")
    _raises(load_audio, tmp_path / "empty.mp4", 16000, match="empty file")
    garbage = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (tmp_path / "garbage.avi").write_bytes(garbage)
    _raises(load_video, tmp_path / "garbage.avi", 2.0, match="cannot decode|no video")
    (tmp_path / "garbage.wav").write_bytes(garbage)
    _raises(load_audio, tmp_path / "garbage.wav", 16000, match="cannot decode")

    video = gen.write_video(tmp_path / "v.mp4", codec="h264",
                            audio=gen.tone(2.0, 22050)[None], audio_rate=22050)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video.read_bytes()[:300])
    _raises(load_video, truncated, 2.0, match="cannot decode|no video")
    _raises(load_audio, truncated, 16000, match="cannot decode|no audio")
    wav = gen.write_wav(tmp_path / "t.wav", gen.tone(1.0, 8000), 8000, subtype="PCM_16")
    (tmp_path / "header_only.wav").write_bytes(wav.read_bytes()[:44])
    _raises(load_audio, tmp_path / "header_only.wav", 8000, match="zero-length|cannot decode")


def test_missing_streams_silence_and_empty_segments(tmp_path: Path) -> None:
    silent_video = gen.write_video(tmp_path / "mute.avi")
    _raises(load_audio, silent_video, 16000, match="no audio stream")
    wav = gen.write_wav(tmp_path / "t.wav", gen.tone(1.0, 8000), 8000)
    _raises(load_video, wav, 2.0, match="not a file|cannot decode|no video stream")
    zeros = gen.write_wav(tmp_path / "zeros.wav", np.zeros(8000, np.float32), 8000)
    _raises(load_audio, zeros, 8000, match="silent")
    assert load_audio(zeros, 8000, reject_silent=False).shape == (8000,)
    _raises(load_audio, wav, 8000, start=3.0, end=4.0, match="zero-length")
    _raises(load_audio, wav, 8000, start=0.5, end=0.5, match="not after start")
    _raises(load_video, silent_video, 4.0, start=5.0, match="no video frames")


def test_packed_pcm_track_of_avi(tmp_path: Path) -> None:
    """Interleaved 16-bit stereo (FFmpeg's packed s16), downmixed and cut exactly."""
    rate = 16000
    audio = np.stack([gen.tone(1.0, rate, 440.0), gen.tone(1.0, rate, 1000.0, amp=0.25)])
    path = gen.write_video(tmp_path / "pcm.avi", audio=audio, audio_rate=rate,
                           audio_codec="pcm_s16le")
    mono = audio.mean(axis=0)
    np.testing.assert_allclose(load_audio(path, rate), mono, atol=1e-4)
    np.testing.assert_allclose(load_audio(path, rate, start=0.6, end=0.9), mono[9600:14400],
                               atol=1e-4)


# --------------------------------------------------------------------- frame folders


def _frame_folder(folder: Path, n: int, suffix: str = ".png", size=(32, 48)) -> Path:
    """Frames frame1..frameN (not zero-padded: the order must be natural, not lexical)."""
    import torch
    from torchvision.io import encode_jpeg, encode_png

    folder.mkdir(parents=True)
    for i in range(n):
        img = torch.full((3, *size), gen.frame_level(i), dtype=torch.uint8)
        data = encode_png(img) if suffix == ".png" else encode_jpeg(img, quality=95)
        (folder / f"frame{i + 1}{suffix}").write_bytes(data.numpy().tobytes())
    return folder


def test_a_frame_folder_is_sampled_like_the_video_it_came_from(tmp_path: Path) -> None:
    folder = _frame_folder(tmp_path / "clip", 20)
    (folder / "notes.txt").write_text("not a frame")
    video = gen.write_video(tmp_path / "v.avi", n_frames=20, rate=10)
    every = load_video(folder, fps=None, folder_fps=10)
    assert every.shape == (20, 32, 48, 3) and every.dtype == np.uint8
    assert every[:, 0, 0, 0].tolist() == [gen.frame_level(i) for i in range(20)]  # PNG: exact
    for kwargs in ({"fps": 4}, {"fps": 4, "start": 0.55, "end": 1.5},
                   {"fps": 20, "max_frames": 6}, {"fps": None, "start": 0.55, "end": 1.5}):
        from_folder = load_video(folder, folder_fps=10, **kwargs)
        from_video = load_video(video, **kwargs)
        assert from_folder.shape == from_video.shape, kwargs
        np.testing.assert_allclose(from_folder[:, 16, 24, 0], from_video[:, 16, 24, 0], atol=6)
    # the folder's rate decides the times: at 20 fps, 1 s holds frames 0..19
    assert load_video(folder, fps=2, folder_fps=20)[:, 0, 0, 0].tolist() == \
        [gen.frame_level(0), gen.frame_level(10)]
    jpeg = load_video(_frame_folder(tmp_path / "jpeg", 4, ".jpg"), fps=None, folder_fps=10)
    np.testing.assert_allclose(jpeg[:, 0, 0, 0], [gen.frame_level(i) for i in range(4)], atol=3)


def test_broken_frame_folders_raise_media_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _raises(load_video, empty, 1.0, match=r"no image frames \(.jpeg, .jpg, .png\) in folder empty")
    folder = _frame_folder(tmp_path / "bad", 3)
    (folder / "frame2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    load_video(folder, fps=1.0, folder_fps=10)  # only frame 1 is sampled: fine
    _raises(load_video, folder, None, match="cannot decode frame frame2.png of bad")
    mixed = _frame_folder(tmp_path / "mixed", 2)
    (mixed / "frame3.png").write_bytes((tmp_path / "bad" / "frame1.png").read_bytes())
    _frame_folder(tmp_path / "big", 1, size=(16, 16))
    (mixed / "frame4.png").write_bytes((tmp_path / "big" / "frame1.png").read_bytes())
    _raises(load_video, mixed, None, match="frames of mixed differ in size")
    _raises(load_video, folder, 1.0, start=5.0, match=r"no frames of folder bad in \[5.0, None\)")
