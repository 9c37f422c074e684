"""Frozen feature extractors, by name: `amid-extract list` shows them.

Adding one: a module with an `@EXTRACTORS.register("name")` Extractor subclass,
imported below. `expected_identity(extractor, params, where)` gives the
identity a cache made with that configuration carries, loading no weights:
stage two compares it with a cache's (`amid.cache.identity_differences`).
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
    expected_identity,
)

__all__ = ["EXTRACTORS", "Extractor", "MediaError", "MediaItem", "build_extractor",
           "expected_identity"]
