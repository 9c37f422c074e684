"""A cache's identity record (amid/identity.py): read back, hashed, compared key by key."""

from __future__ import annotations

import hashlib
import json

from amid.identity import identity_differences, identity_hash, identity_of

PIXELS = {"modality": "visual", "extractor": "pixels", "model": "none",
          "params": {"grid": 8, "n_frames": 4}}


def test_identity_of_reads_the_attributes_a_cache_records():
    attrs = {"modality": "visual", "extractor": "pixels", "params": '{"grid":8,"n_frames":4}',
             "feature_dim": 192, "complete": True}
    assert identity_of(attrs) == PIXELS  # model absent: "none" (weightless); JSON params parsed
    assert identity_of({**attrs, "params": {"grid": 8, "n_frames": 4}}) == PIXELS


def test_the_hash_covers_the_four_keys_and_nothing_else():
    text = json.dumps(PIXELS, sort_keys=True, separators=(",", ":"))
    assert identity_hash(PIXELS) == hashlib.sha256(text.encode()).hexdigest()[:16]
    # other keys (a cache's feature_dim, precision outside params) do not change it
    assert identity_hash({**PIXELS, "feature_dim": 192}) == identity_hash(PIXELS)
    reordered = {**PIXELS, "params": {"n_frames": 4, "grid": 8}}
    assert identity_hash(reordered) == identity_hash(PIXELS)
    assert identity_hash({**PIXELS, "params": {"grid": 4, "n_frames": 4}}) != identity_hash(PIXELS)


def test_differences_name_every_key_and_each_param():
    found = {**PIXELS, "model": "other", "params": {"grid": 4, "precision": "bf16"}}
    assert identity_differences(PIXELS, found) == [
        "model: expected 'none', cache has 'other'",
        "params.grid: expected 8, cache has 4",
        "params.n_frames: expected 4, cache has '<unset>'",
        "params.precision: expected '<unset>', cache has 'bf16'",
    ]
    assert identity_differences(PIXELS, found, ignore=("precision", "n_frames")) == [
        "model: expected 'none', cache has 'other'",
        "params.grid: expected 8, cache has 4",
    ]
    assert identity_differences(PIXELS, dict(PIXELS)) == []
