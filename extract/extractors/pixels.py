"""`pixels`: a weightless visual extractor, frames average-pooled to a small grid.

Each decoded frame (sampled at `fps`, or every frame when `fps` is 0) becomes
its grey-level image average-pooled to `grid x grid` cells, scaled to [0, 1]:
a sequence of shape (T, grid * grid). Enough for the demo's digits, and a
fixed, reproducible baseline for any video. Videos from which more than 512
frames would be sampled are decoded and pooled as a stream (`extractors.long`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amid.extract.extractors.base import (
    EXTRACTORS,
    VIDEO_DECODERS,
    Extractor,
    ExtractorParams,
    MediaError,
    MediaItem,
)
from amid.extract.extractors.long import LongVideo, batches, long_video
from amid.extract.media import load_video
from amid.schema import option


@EXTRACTORS.register("pixels")
class PixelsExtractor(Extractor):
    modality = "visual"
    LIBRARIES = (*VIDEO_DECODERS, "torch")  # torch: the area pooling

    class Params(ExtractorParams):
        # cells per side of the pooled frame; 256 a side: 65,536-d
        grid: int = option(8, ge=1, le=256)
        # frames per second to sample; 0 keeps every frame
        fps: float = option(0.0, ge=0, note="(0 keeps every frame)")
        max_frames: int = option(64, ge=1)

    @property
    def feature_dim(self) -> int:
        return self.params.grid * self.params.grid

    def load(self, item: MediaItem) -> Any:
        if item.path is None:
            raise MediaError("no video_path")
        deferred = long_video(item, self.params.fps or None, self.params.max_frames)
        if deferred is not None:
            return deferred
        frames = load_video(
            item.path,
            fps=self.params.fps or None,
            start=item.start,
            end=item.end,
            max_frames=self.params.max_frames,
        )
        return frames  # (T, H, W, 3) uint8

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        out = []
        for frames in batch:
            if isinstance(frames, LongVideo):
                out.append(np.concatenate([self._pool(b) for b in batches(frames.stream(), 256)]))
            else:
                out.append(self._pool(frames))
        return out

    def _pool(self, frames: np.ndarray) -> np.ndarray:
        gray = torch.from_numpy(frames).float().mean(dim=-1) / 255.0  # (T, H, W)
        pooled = F.adaptive_avg_pool2d(gray[:, None], self.params.grid)  # (T, 1, g, g)
        return pooled.flatten(1).numpy().astype(np.float32)  # (T, g*g)
