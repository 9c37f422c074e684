"""Frozen feature extractors, by name: `amid-extract list` shows them.

Adding one: a module with an `@EXTRACTORS.register("name")` Extractor subclass,
imported below.
"""

from amid.extract.extractors import hashing, logmel, pixels  # noqa: F401  (registration)
from amid.extract.extractors.base import EXTRACTORS, Extractor, MediaError, MediaItem, build_extractor

__all__ = ["EXTRACTORS", "Extractor", "MediaError", "MediaItem", "build_extractor"]
