"""Training reads the caches its configuration describes, or refuses.

A cache's file name names only the extractor; its attributes record every
setting that made the features (docs/data.md). Before anything trains, each
cache's identity is compared with what `extract.<modality>` says now, so a
changed setting (`extract.visual.params.grid=4` against a grid-8 cache) is
an error naming the differing keys instead of a run that records grid 4 and
trained on grid 8. `precision` is left out: bf16 or fp32 follows the machine
the cache was made on, not the configuration.
"""

from __future__ import annotations

from typing import Any

from amid.cache import identity_differences
from amid.config import Config, ModalityExtractConfig
from amid.distill.data import TrainData
from amid.errors import AmidError, CacheError


def expected_identity(modality: str, spec: ModalityExtractConfig) -> tuple[dict[str, Any], bool]:
    """(identity a cache of `spec` carries, complete?) without loading any weights.

    For an extractor this installation does not know (an imported cache such
    as the published UCF51 embeddings, or a test's synthetic one) only the
    extractor name and the params the configuration gives can be checked.
    """
    try:
        from amid.extract.extractors import expected_identity as from_extractor

        return from_extractor(spec.extractor, spec.params, f"extract.{modality}.params"), True
    except ImportError:  # an extract stage without expected_identity (older installs)
        pass
    except AmidError as exc:
        if "unknown extractor" not in str(exc):
            raise
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
