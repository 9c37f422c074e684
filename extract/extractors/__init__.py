"""Frozen feature extractors, by name: `amid-extract list` shows them.

Adding one is one file in this folder: a module with an
`@EXTRACTORS.register("name")` Extractor subclass (every module here is imported
below). `expected_identity(extractor, params, where)` gives the identity a cache
made with that configuration carries, loading no weights: stage two compares it
with a cache's (`amid.cache.identity_differences`).
"""

from amid.extract.extractors.base import (
    EXTRACTORS,
    Extractor,
    MediaError,
    MediaItem,
    build_extractor,
    expected_identity,
)
from amid.registry import import_all

import_all(__name__, __path__)

__all__ = ["EXTRACTORS", "Extractor", "MediaError", "MediaItem", "build_extractor",
           "expected_identity"]
