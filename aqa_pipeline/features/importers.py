"""Importing released feature folders (`aqa features import --format npy-dir`).

GDLT's and InterAQA's releases are folders of per-video `.npy` arrays of shape (T, D), one
row per clip. The numbers were made elsewhere, so what made them (backbone, weights,
sampling) is given on the command line and recorded as the cache's key fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aqa_pipeline.errors import AqaError
from aqa_pipeline.features.keys import cache_key_fields
from aqa_pipeline.features.store import STATUS_FAILED, FeatureSet, VideoRecord, write_features
from aqa_pipeline.provenance import environment


def import_npy_dir(
    folder: Path,
    out: Path,
    backbone: str,
    clip_len: int,
    dtype: str = "float32",
    weights_sha256: str | None = None,
    weights_name: str | None = None,
    sampling: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    note: str = "",
) -> FeatureSet:
    """Every `*.npy` below `folder` becomes one video (id = relative path without .npy);
    clip i covers frames [i * clip_len, (i + 1) * clip_len) of the sampled sequence."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AqaError(f"{folder}: not a folder of .npy feature files")
    files = sorted(folder.rglob("*.npy"))
    if not files:
        raise AqaError(f"{folder}: no .npy files found")
    records: list[VideoRecord] = []
    dim: int | None = None
    for f in files:
        vid = f.relative_to(folder).with_suffix("").as_posix()
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            records.append(VideoRecord(vid, str(f), STATUS_FAILED, f"unreadable .npy: {exc}"))
            continue
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] == 0:
            records.append(
                VideoRecord(vid, str(f), STATUS_FAILED, f"shape {arr.shape}, expected (T, D)")
            )
            continue
        if dim is None:
            dim = int(arr.shape[1])
        elif arr.shape[1] != dim:
            raise AqaError(f"{f}: feature dim {arr.shape[1]} differs from {dim} of the other files")
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            records.append(VideoRecord(vid, str(f), STATUS_FAILED, "non-finite values"))
            continue
        starts = np.arange(len(arr), dtype=np.int64) * clip_len
        records.append(
            VideoRecord(
                vid,
                str(f),
                clip_features=arr,
                clip_frames=np.stack([starts, starts + clip_len], axis=1),
                num_frames=len(arr) * clip_len,
            )  # fmt: skip
        )
    if dim is None:
        raise AqaError(f"{folder}: none of the .npy files could be read")
    key_fields = cache_key_fields(
        backbone=backbone,
        arch={},
        feature_dim=dim,
        weights={"sha256": weights_sha256, "random_init": False, "name": weights_name},
        sampling=sampling or {"method": "imported", "clip_len": clip_len},
        preprocess=preprocess or {},
        dtype=dtype,
        compute_precision="unknown",
    )
    provenance = {
        **key_fields,
        "imported_from": str(folder.resolve()),
        "note": note,
        "shard": None,
        "runs": [environment()],
    }
    fs = FeatureSet.from_records(records, dim, dtype, key_fields, provenance)
    write_features(out, fs)
    return fs
