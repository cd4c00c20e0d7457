"""Timelines: clip weight and clip score over a video's time, with predicted and true total.

Read from clip_outputs.h5 (heads with per-clip outputs, e.g. interaqa and gdlt) and
predictions.csv; one PNG per video under <dir>/timelines/.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet
from aqa_pipeline.results import plots
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.rundir import read_clip_outputs


def safe_name(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", video_id)


def write_timelines(
    out_dir: Path,
    which: str,
    protocol: str = "final",
    seed: int | None = None,
    features: FeatureSet | None = None,
) -> list[Path]:
    """Draw the timeline of video `which` (or every test video with which="all")."""
    preds = Predictions.read(out_dir / "predictions.csv")
    protocols, _, seeds = preds.keys()
    if protocol not in protocols:
        raise AqaError(f"{out_dir}: no {protocol!r} predictions (have {protocols})")
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise AqaError(f"{out_dir}: no seed {seed} (seeds: {seeds})")
    clips = read_clip_outputs(out_dir / "clip_outputs.h5", protocol, seed)
    wanted = sorted(clips) if which == "all" else [which]
    unknown = [v for v in wanted if v not in clips]
    if unknown:
        raise AqaError(f"{out_dir}: no clip outputs for video {unknown[0]!r} (test videos only)")
    fps_of = {}
    if features is not None:
        fps_of = {
            v: float(f) for v, f in zip(features.video_ids, features.fps, strict=False) if f > 0
        }
    paths = []
    for vid in wanted:
        rec = clips[vid]
        sel = preds.select(protocol, rec["fold"], seed)
        i = int(np.flatnonzero(sel["video_id"] == vid)[0])
        path = out_dir / "timelines" / f"{safe_name(vid)}.png"
        paths.append(
            plots.timeline(
                vid, rec, float(sel["pred"][i]), float(sel["true"][i]), fps_of.get(vid), path
            )
        )
    return paths
