"""Consistency checks of a feature cache (`aqa features verify`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aqa_pipeline.config import config_hash
from aqa_pipeline.features.store import STATUS_OK, read_features


def verify_cache(path: str | Path) -> list[str]:
    """Every problem found in the cache at `path` (empty list: the cache is sound)."""
    fs = read_features(path)
    problems: list[str] = []
    n, c = fs.n_videos, fs.n_clips
    if len(set(fs.video_ids)) != n:
        problems.append("duplicate video ids")
    for name, length in (("status", len(fs.status)), ("error", len(fs.errors)),
                         ("video_features", len(fs.video_features))):  # fmt: skip
        if length != n:
            problems.append(f"{name} has {length} rows for {n} videos")
    off = fs.clip_offsets
    if len(off) != n + 1 or off[0] != 0 or off[-1] != c or np.any(np.diff(off) < 0):
        problems.append("clip_offsets are not a monotone 0..n_clips index")
        return problems
    if len(fs.clip_frames) != c:
        problems.append(f"clip_frames has {len(fs.clip_frames)} rows for {c} clips")
    elif c and np.any(fs.clip_frames[:, 1] <= fs.clip_frames[:, 0]):
        problems.append("a clip frame range is empty (end <= start)")
    tol = 1e-2 if fs.clip_features.dtype == np.float16 else 1e-4
    for i, vid in enumerate(fs.video_ids):
        clips = fs.clips(i).astype(np.float32)
        if fs.status[i] == STATUS_OK:
            if len(clips) == 0:
                problems.append(f"{vid}: status ok but no clips")
                continue
            if not np.all(np.isfinite(clips)):
                problems.append(f"{vid}: non-finite clip features")
                continue
            mean = fs.video_features[i].astype(np.float32)
            err = float(np.max(np.abs(mean - clips.mean(axis=0))))
            if err > tol * max(1.0, float(np.max(np.abs(mean)))):
                problems.append(f"{vid}: video feature differs from the clip mean by {err:.3g}")
        else:
            if len(clips):
                problems.append(f"{vid}: failed but has {len(clips)} clips")
            if not fs.errors[i]:
                problems.append(f"{vid}: failed without a recorded reason")
    if fs.provenance.get("cache_key") not in (None, config_hash(fs.key_fields)):
        problems.append("cache_key does not match the recorded key fields")
    return problems
