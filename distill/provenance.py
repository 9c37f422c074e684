"""Training reads the caches its configuration describes, or refuses.

Before anything trains, each cache's identity (its attributes record every setting
that made the features: docs/data.md) is compared with what `extract.<modality>`
says now, so a changed setting (`extract.visual.params.grid=4` against a grid-8
cache) is an error naming the differing keys, not a run that records grid 4 and
trained on grid 8. `precision` is left out: it follows the machine the cache was
made on. Each sample's source fingerprint is compared with the manifest's too
(`stale_sources`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from amid.cache import FeatureCache
from amid.config import Config, ModalityExtractConfig
from amid.errors import CacheError
from amid.extract.extractors import EXTRACTORS
from amid.extract.extractors import expected_identity as extractor_identity
from amid.identity import identity_differences
from amid.manifest import Manifest
from amid.samples import media_items, sample_sources

if TYPE_CHECKING:  # data.py loads the caches through this module's checks
    from amid.distill.data import TrainData


def expected_identity(modality: str, spec: ModalityExtractConfig) -> tuple[dict[str, Any], bool]:
    """(identity a cache of `spec` carries, complete?) without loading any weights; for an
    extractor this installation does not know (an imported cache such as the published
    UCF51 embeddings) only its name and the params the configuration gives."""
    if spec.extractor in EXTRACTORS:  # a bad parameter is a ConfigError naming it
        return extractor_identity(spec.extractor, spec.params,
                                  f"extract.{modality}.params"), True
    return {"modality": modality, "extractor": spec.extractor, "params": dict(spec.params)}, False


def check_cache_identities(data: TrainData, cfg: Config) -> None:
    for m, d in {**data.target, **data.auxiliary}.items():
        want, complete = expected_identity(m, cfg.extract[m])
        found = d.identity
        if not complete:  # compare what is known: the name and the params given
            found = {"modality": found.get("modality"), "extractor": found.get("extractor"),
                     "params": {k: v for k, v in (found.get("params") or {}).items()
                                if k in want["params"]}}
            want = {**want, "model": found.get("model")}
            found["model"] = want["model"]
        diffs = identity_differences(want, found, ignore=("precision",))
        if diffs:
            raise CacheError(
                f"{d.source} was made with other settings than extract.{m} says "
                f"({'; '.join(diffs)}); run `amid-extract run -m {m}` to extract it again")


def stale_sources(manifest: Manifest, modality: str, cache: FeatureCache,
                  rows: np.ndarray) -> None:
    """Refuse a cache whose samples were made from other media or text than the manifest
    gives now (its `/sources` against the manifest's, as `amid-extract run` compares
    them: `amid.samples`); `rows`: the cache row of each sample trained on (-1: absent)."""
    if cache.sources is None:  # an older cache: nothing recorded to compare
        return
    row_of = {cache.ids[r]: int(r) for r in rows[rows >= 0]}
    # media no longer on disk cannot be compared (features kept, the raw files removed):
    # those samples train on what was extracted, as before
    items = [it for it in media_items(manifest, modality) if it.sample_id in row_of
             and (modality == "text" or (it.path is not None and Path(it.path).exists()))]
    now = sample_sources(items, modality, manifest.root)
    # "" records nothing (samples carried over from a cache without fingerprints)
    stale = [sid for sid, fp in now.items() if cache.sources[row_of[sid]] not in (fp, "")]
    if stale:
        what = "transcripts" if modality == "text" else "media or segments"
        raise CacheError(
            f"{cache.path}: {len(stale)} sample(s) were extracted from other {what} than "
            f"{manifest.path} gives now (first: {stale[0]!r}); run `amid-extract run -m "
            f"{modality}` to extract them again")
