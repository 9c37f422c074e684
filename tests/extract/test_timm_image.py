"""The timm frame extractor with tiny random timm models (no download): timm's preprocessing,
frame sampling, strict loading of a local weight file, loud failure without weights."""

from __future__ import annotations

from pathlib import Path

import media_gen as gen  # tests/extract/fixtures, on pytest's pythonpath
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from amid.errors import CheckpointError
from amid.extract.extractors import timm_image  # noqa: F401  (registration)
from amid.extract.extractors.base import MediaError, MediaItem, build_extractor

TINY = "test_resnet"  # timm's 0.4 M-parameter test network, 160 px, bilinear, crop 0.95


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return gen.write_video(tmp_path_factory.mktemp("v") / "v.avi", n_frames=20, rate=10,
                           size=(48, 64))


def test_preprocessing_is_timms_own_and_frames_follow_fps(video) -> None:
    ex = build_extractor("densenet", {"model": TINY, "random_init": True, "fps": 2.0})
    assert ex.data_config["input_size"] == (3, 160, 160)
    x = ex.load(MediaItem("v", video))
    assert x.shape == (4, 3, 160, 160)  # 2 s at 2 fps
    # timm's transform on PIL images, frame by frame: the reference pipeline
    from timm.data import create_transform

    reference = create_transform(**ex.data_config)
    frames = np.stack([np.full((48, 64, 3), gen.frame_level(i), np.uint8) for i in (0, 5, 10, 15)])
    expect = torch.stack([reference(Image.fromarray(f)) for f in frames])
    np.testing.assert_allclose(x.numpy(), expect.numpy(), atol=6 / 255 / 0.5)  # codec noise
    np.testing.assert_allclose(ex.preprocess(frames).numpy(), expect.numpy(), atol=2e-2)
    default = build_extractor("densenet", {"random_init": True})  # densenet121's own config
    assert default.feature_dim == 1024
    assert default.data_config["interpolation"] == "bicubic"
    assert default.data_config["crop_pct"] == 0.875


def test_features_per_frame_and_pooling(video) -> None:
    ex = build_extractor("densenet", {"model": TINY, "random_init": True, "fps": 2.0})
    x = ex.load(MediaItem("v", video))
    short = ex.load(MediaItem("w", video, start=0.5, end=1.0))  # targets .5, 1.0 excluded: 1
    feats = ex.embed([x, short])
    assert feats[0].shape == (4, ex.feature_dim) and feats[1].shape == (1, ex.feature_dim)
    with torch.no_grad():
        direct = ex.module(x).numpy()
    np.testing.assert_allclose(feats[0], direct, atol=1e-5)
    np.testing.assert_allclose(feats[1][0], feats[0][1], atol=1e-4)  # both are frame 5
    mean = build_extractor("densenet", {"model": TINY, "random_init": True, "fps": 2.0,
                                        "pooling": "mean"})
    np.testing.assert_allclose(mean.embed([x])[0], direct.mean(axis=0, keepdims=True), atol=1e-5)
    with pytest.raises(MediaError, match="no video_path"):
        ex.load(MediaItem("n", None))


def test_local_checkpoint_loads_strictly(tmp_path, video) -> None:
    torch.manual_seed(3)
    source = timm.create_model(TINY, pretrained=False).eval()  # with its 1000-class head
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    ex = build_extractor("densenet", {"model": TINY, "checkpoint": str(path), "fps": 2.0})
    assert ex.model == f"{TINY} ({path})"
    x = ex.load(MediaItem("v", video))
    with torch.no_grad():
        expect = source.forward_head(source.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(ex.embed([x])[0], expect, atol=1e-5)

    state = source.state_dict()
    del state["stem.conv1.weight" if "stem.conv1.weight" in state else next(iter(state))]
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(CheckpointError, match="does not fit timm model.*missing keys"):
        build_extractor("densenet", {"model": TINY, "checkpoint": str(partial)})
    with pytest.raises(CheckpointError, match="not found"):
        build_extractor("densenet", {"model": TINY, "checkpoint": str(tmp_path / "no.pth")})


def test_no_weights_offline_is_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError, match="timm/test_resnet.*looked at.*offline"):
        build_extractor("densenet", {"model": TINY})


def test_frame_folders_extract_like_their_frames(tmp_path) -> None:
    """A manifest whose video_path names frame folders: each cached row is the model on
    the sampled frames, decoded independently with PIL; an empty folder goes to the sidecar."""
    import pandas as pd
    from PIL import Image

    from amid.cache import read_cache, read_errors
    from amid.extract.run import run_extraction
    from amid.manifest import read_manifest, write_manifest

    rng = np.random.default_rng(0)
    rows = []
    for clip in range(3):
        folder = tmp_path / "frames" / f"clip{clip}"
        folder.mkdir(parents=True)
        for k in range(6 + clip):  # 6, 7, 8 frames taken at 4 fps
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(
                folder / f"img_{k:05d}.png")
        rows.append({"sample_id": f"c{clip}", "label": "x", "split": "train",
                     "video_path": f"frames/clip{clip}"})
    (tmp_path / "frames" / "hollow").mkdir()
    rows.append({"sample_id": "hollow", "label": "x", "split": "train",
                 "video_path": "frames/hollow"})
    write_manifest(pd.DataFrame(rows), tmp_path / "m.csv")
    ex = build_extractor("densenet", {"model": "test_resnet", "random_init": True, "fps": 2.0,
                                      "folder_fps": 4.0})
    report = run_extraction(read_manifest(tmp_path / "m.csv", tmp_path), "visual", ex,
                            tmp_path / "v.h5", batch_size=2, progress=False)
    cache = read_cache(report.path)
    assert cache.ids == ["c0", "c1", "c2"]
    assert "no image frames" in read_errors(report.path)["hollow"]
    for clip in range(3):
        # 2 fps over frames taken at 4 fps: every second frame, 0, 2, 4, (6)
        picks = range(0, 6 + clip, 2)
        frames = np.stack([np.asarray(Image.open(tmp_path / "frames" / f"clip{clip}" /
                                                 f"img_{k:05d}.png")) for k in picks])
        with torch.no_grad():
            expect = ex.module(ex.preprocess(frames)).numpy()
        np.testing.assert_allclose(cache.sequence(clip), expect, atol=1e-5)
