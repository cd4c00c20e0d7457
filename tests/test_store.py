"""The HDF5 store: round trip, atomic writes, clear errors, key checks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from aqa_pipeline.errors import AqaError, MismatchError
from aqa_pipeline.features.store import (
    STATUS_FAILED,
    FeatureSet,
    VideoRecord,
    check_key,
    read_features,
    write_features,
)

KEY = {"backbone": {"name": "i3d", "arch": {}}, "dtype": "float32", "sampling": {"clip_len": 16}}


def sample_set() -> FeatureSet:
    rng = np.random.default_rng(0)
    recs = [
        VideoRecord(
            "b", clip_features=rng.normal(size=(3, 4)), clip_frames=[[0, 16], [16, 32], [32, 48]]
        ),
        VideoRecord("a", status=STATUS_FAILED, error="too short"),
        VideoRecord(
            "c",
            clip_features=rng.normal(size=(1, 4)),
            clip_frames=[[5, 21]],
            num_frames=30,
            fps=25.0,
        ),
    ]
    return FeatureSet.from_records(recs, 4, "float32", KEY, {"note": "x"})


def test_round_trip(tmp_path):
    fs = sample_set()
    path = write_features(tmp_path / "c.h5", fs)
    back = read_features(path)
    assert back.video_ids == ["b", "a", "c"]
    assert back.clip_offsets.tolist() == [0, 3, 3, 4]
    np.testing.assert_allclose(back.clips(0), fs.clips(0))
    np.testing.assert_allclose(back.video_features[0], fs.clips(0).mean(0), rtol=1e-6)
    assert np.isnan(back.video_features[1]).all()
    assert back.failed() == [{"video_id": "a", "error": "too short"}]
    assert back.frames(2).tolist() == [[5, 21]]
    assert back.key_fields == KEY and back.provenance == {"note": "x"}
    assert back.cache_key == fs.cache_key and back.index("c") == 2
    assert not list(tmp_path.glob(".*tmp*"))


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = write_features(tmp_path / "c.h5", sample_set())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.File, "create_dataset", boom)
    with pytest.raises(RuntimeError):
        write_features(path, sample_set())
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp*"))


def test_duplicate_ids_and_wrong_dims_are_refused():
    with pytest.raises(AqaError, match="duplicate video ids"):
        FeatureSet.from_records([VideoRecord("x"), VideoRecord("x")], 4)
    with pytest.raises(AqaError, match="expected \\(T, 4\\)"):
        FeatureSet.from_records(
            [VideoRecord("x", clip_features=np.zeros((2, 5)), clip_frames=[[0, 1], [1, 2]])], 4
        )


def test_not_a_cache(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(AqaError, match="not an aqa feature cache \\(missing video_ids"):
        read_features(tmp_path / "other.h5")
    with pytest.raises(AqaError, match="no such feature cache"):
        read_features(tmp_path / "nope.h5")


def test_check_key_names_fields():
    with pytest.raises(MismatchError) as err:
        check_key({**KEY, "dtype": "float16"}, KEY, "cache.h5")
    assert err.value.exit_code == 3 and "dtype: 'float16' != 'float32'" in str(err.value.message)
    check_key(KEY, {"backbone": {"name": "i3d"}}, "cache.h5", subset=True)
    with pytest.raises(MismatchError, match="backbone.name"):
        check_key(KEY, {"backbone": {"name": "swin3d_b"}}, "cache.h5", subset=True)
