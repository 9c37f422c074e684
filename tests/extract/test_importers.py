"""import_ucf51_cnn14: the real UCF51 CNN14 archive as a feature cache."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import media_gen as gen  # tests/extract/fixtures, on pytest's pythonpath
import numpy as np
import pytest
from repo_data import UCF51_ARCHIVE as ARCHIVE  # tests/extract/fixtures, on the pythonpath

from amid.cache import cache_path, read_cache
from amid.errors import CacheError
from amid.extract.importers import import_ucf51_cnn14


def test_real_archive_becomes_a_cache(tmp_path) -> None:
    out = cache_path(tmp_path, "ucf51", "audio", "cnn14-emb512")
    assert import_ucf51_cnn14(ARCHIVE, out) == out
    cache = read_cache(out)
    assert len(cache) == 6837 and cache.feature_dim == 512
    assert (cache.lengths == 1).all()
    assert cache.attrs["modality"] == "audio" and cache.attrs["extractor"] == "cnn14-emb512"
    assert json.loads(cache.attrs["params"])["source"] == ARCHIVE.name
    # no extractor ran: only the writer's own libraries are recorded
    assert set(json.loads(cache.attrs["library_versions"])) == {"h5py", "numpy"}
    assert not any(i.startswith("._") for i in cache.ids)
    groups = np.array([int(i.split("_g")[1][:2]) for i in cache.ids])
    assert (groups <= 7).sum() == 1944 and (groups > 7).sum() == 4893
    # spot-check vectors against the archive members, read here on their own
    index = cache.index()
    wanted = {
        "audiocnn14embed512_features/CricketBowling/v_CricketBowling_g22_c02.npy",
        "audiocnn14embed512_features/HandstandPushups/v_HandStandPushups_g05_c01.npy",
    }
    with tarfile.open(ARCHIVE) as tar:
        for name in wanted:
            vector = np.load(io.BytesIO(tar.extractfile(name).read()))
            sid = Path(name).stem
            np.testing.assert_array_equal(cache.sequence(index[sid])[0], vector)




def test_macos_metadata_skipped_and_bad_members_named(tmp_path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 512)).astype(np.float32)
    archive = gen.tar_gz(tmp_path / "f.tar.gz", {
        "feats/Archery/v_Archery_g01_c01.npy": gen.npy_bytes(a),
        "feats/Archery/._v_Archery_g01_c01.npy": b"\x00\x05\x16\x07 mac resource fork",
        "._feats": b"\x00\x05\x16\x07",
        "feats/Bowling/v_Bowling_g09_c02.npy": gen.npy_bytes(b[None]),  # (1, 512) is fine too
    })
    cache = read_cache(import_ucf51_cnn14(archive, tmp_path / "c.h5"))
    assert cache.ids == ["v_Archery_g01_c01", "v_Bowling_g09_c02"]
    np.testing.assert_array_equal(cache.features, np.stack([a, b]))

    small = gen.npy_bytes(np.zeros(128, np.float32))
    bad = gen.tar_gz(tmp_path / "bad.tar.gz", {"feats/X/v_X_g01_c01.npy": small})
    with pytest.raises(CacheError, match=r"v_X_g01_c01.npy holds shape \(128,\)"):
        import_ucf51_cnn14(bad, tmp_path / "bad.h5")
    with pytest.raises(CacheError, match="not found"):
        import_ucf51_cnn14(tmp_path / "absent.tar.gz", tmp_path / "x.h5")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(CacheError, match="cannot be read"):
        import_ucf51_cnn14(tmp_path / "junk.tar.gz", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
