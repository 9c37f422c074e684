"""Frozen feature extractors, by name: `amid-extract list` shows them.

Adding one: a module with an `@EXTRACTORS.register("name")` Extractor subclass,
imported below.
"""

from amid.extract.extractors import (  # noqa: F401  (registration)
    hashing,
    hf_text,
    logmel,
    panns,
    pixels,
    timm_image,
    wav2vec2,
)
from amid.extract.extractors.base import (
    EXTRACTORS,
    Extractor,
    MediaError,
    MediaItem,
    build_extractor,
)

__all__ = ["EXTRACTORS", "Extractor", "MediaError", "MediaItem", "build_extractor"]
