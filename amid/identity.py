"""A feature cache's identity: what made its features, so that two caches are
interchangeable exactly when their identities are equal (docs/data.md).

{modality, extractor, model, params}: the extractor, the weights it ran (hub id,
path, "random-init(seed=N)" or "none") and every parameter that changes the
features. Stages compare it key by key (`identity_differences`), so a refusal
names each setting that differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

IDENTITY_KEYS = ("modality", "extractor", "model", "params")


def canonical_params(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def identity_hash(identity: dict[str, Any]) -> str:
    """A short digest of everything that changes the features."""
    text = canonical_params({k: identity[k] for k in IDENTITY_KEYS})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity_of(attrs: dict[str, Any]) -> dict[str, Any]:
    """The identity (modality, extractor, model, params dict) a cache's attributes record."""
    params = attrs.get("params", "{}")
    return {"modality": attrs.get("modality"), "extractor": attrs.get("extractor"),
            "model": attrs.get("model", "none"),
            "params": json.loads(params) if isinstance(params, str) else dict(params or {})}


def identity_differences(expected: dict[str, Any], found: dict[str, Any],
                         ignore: Sequence[str] = ()) -> list[str]:
    """`key: expected X, cache has Y` for every identity key that differs (params key by
    key); `ignore` names params to leave out (e.g. `precision`, which follows the machine).
    """
    a, b = dict(expected.get("params") or {}), dict(found.get("params") or {})
    pairs = [(k, expected.get(k), found.get(k)) for k in ("modality", "extractor", "model")]
    pairs += [(f"params.{k}", a.get(k, "<unset>"), b.get(k, "<unset>"))
              for k in sorted((set(a) | set(b)) - set(ignore))]
    return [f"{key}: expected {x!r}, cache has {y!r}" for key, x, y in pairs if x != y]
