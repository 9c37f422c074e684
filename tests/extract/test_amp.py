"""Neural extractors under bf16 autocast, run on the CPU (`amid.devices.AMP_DEVICES`).

What a GPU run adds is speed; what can break is dtype handling (bf16
activations reaching numpy, the cache, the pooling). The expectation is the
fp32 embedding of the same model and input: close, not equal, float32 out,
and a cache identity that records the precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from amid import devices
from amid.extract.extractors.base import MediaItem, build_extractor


def _cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    x, y = np.concatenate(a).reshape(len(a), -1), np.concatenate(b).reshape(len(b), -1)
    return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


@pytest.mark.parametrize("name,params", [
    ("panns-cnn14-emb512", {"random_init": True}),
    ("densenet", {"model": "test_resnet", "random_init": True, "fps": 2.0}),
])
def test_bf16_embeddings_match_fp32(tmp_path, monkeypatch, name, params):
    rng = np.random.default_rng(0)
    if name.startswith("panns"):
        paths = []
        # two lengths (two forward passes: clips of unequal length are not batched); short
        # ones, as bf16 convolutions on a CPU cost seconds per second of audio and nothing
        # checked here depends on the length
        for k, seconds in enumerate((0.5, 1.0)):
            paths.append(tmp_path / f"a{k}.wav")
            sf.write(paths[-1], 0.1 * rng.standard_normal(int(seconds * 32000)), 32000)
        items = [MediaItem(f"a{k}", p) for k, p in enumerate(paths)]
    else:
        from media_gen import write_video  # generated media (tests/extract/fixtures)

        items = [MediaItem(f"v{k}", write_video(tmp_path / f"v{k}.mp4", n_frames=4 + 2 * k,
                                                rate=2)) for k in range(2)]
    torch.manual_seed(0)
    ex = build_extractor(name, params)
    ex.amp = "bf16"
    loaded = [ex.load(item) for item in items]
    fp32 = ex.embed(loaded)
    fp32_identity = ex.identity()
    monkeypatch.setattr(devices, "AMP_DEVICES", ("cuda", "cpu"))
    bf16 = ex.embed(loaded)
    assert ex.identity() != fp32_identity and ex.identity()["params"]["precision"] == "bf16"
    for a, b in zip(fp32, bf16, strict=True):
        assert b.dtype == np.float32 and b.shape == a.shape
    assert not all(np.array_equal(a, b) for a, b in zip(fp32, bf16, strict=True))
    assert _cosines(fp32, bf16).min() > 0.99
