"""`hashing`: a weightless text extractor, hashed bag of word n-grams.

scikit-learn's HashingVectorizer (l2-normalised, signed hashing) over the
transcript: one clip-level vector (1, n_features). No vocabulary to fit, so
the features of a sample never depend on the other samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amid.extract.extractors.base import (
    EXTRACTORS,
    Extractor,
    ExtractorParams,
    MediaError,
    MediaItem,
)
from amid.schema import option


@EXTRACTORS.register("hashing")
class HashingExtractor(Extractor):
    modality = "text"
    LIBRARIES = ("scikit-learn",)  # its HashingVectorizer

    class Params(ExtractorParams):
        # 2**24 features: 64 MiB a sample in float32 (scikit-learn's default is 2**20)
        n_features: int = option(256, ge=1, le=2**24, note="(4 bytes per feature and sample)")
        ngram_max: int = option(1, ge=1)
        lowercase: bool = True

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        # imported here: scikit-learn costs a second to import, and the extractor
        # registry (loaded by every command that checks a cache's identity) needs none of it
        from sklearn.feature_extraction.text import HashingVectorizer

        self._vectorizer = HashingVectorizer(
            n_features=params.n_features,
            ngram_range=(1, params.ngram_max),
            lowercase=params.lowercase,
            norm="l2",
            alternate_sign=True,
        )

    @property
    def feature_dim(self) -> int:
        return self.params.n_features

    def load(self, item: MediaItem) -> Any:
        if not item.text:
            raise MediaError("empty transcript")
        return item.text

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        matrix = self._vectorizer.transform(batch).toarray().astype(np.float32)  # (B, n_features)
        return [row[None] for row in matrix]
