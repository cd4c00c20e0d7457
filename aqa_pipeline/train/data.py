"""Features and labels aligned row by row and held in memory as tensors (loaded once).

`TrainData` rows follow the LabelSet's rows. Only rows that some fold uses need features;
a needed row with no feature row, or with a failed extraction, is an error naming it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from aqa_pipeline.datasets import LabelSet
from aqa_pipeline.datasets.base import preview
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features import FeatureSet

log = logging.getLogger(__name__)


def take_rows(table: Tensor, rows: Tensor) -> Tensor:
    """table[rows]: table (N, ...), rows (any shape) -> (*rows.shape, ...).

    One index_select, several times faster on the CPU than advanced indexing for feature
    rows (a (32, 1024) batch: ~20 us against ~180 us; a (32, 136, 1024) clip batch: 10 ms
    against 23 ms)."""
    return table.index_select(0, rows.reshape(-1)).view(*rows.shape, *table.shape[1:])


def used_rows(labels: LabelSet) -> np.ndarray:
    """Label rows that some fold trains or tests on, sorted."""
    parts = [np.concatenate([f.train, f.test]) for f in labels.folds]
    return np.unique(np.concatenate(parts))


def align(labels: LabelSet, fs: FeatureSet, cache: str) -> np.ndarray:
    """Feature row of every label row (-1 for rows no fold uses); errors name the ids."""
    index = {v: i for i, v in enumerate(fs.video_ids)}
    rows = np.full(labels.n, -1, dtype=np.int64)
    missing, failed = [], []
    for r in used_rows(labels):
        vid = labels.video_ids[r]
        i = index.get(vid)
        if i is None:
            missing.append(vid)
        elif fs.status[i] != 0:
            failed.append(f"{vid} ({fs.errors[i] or 'failed'})")
        else:
            rows[r] = i
    if missing:
        hint = ""
        if fs.video_ids:
            hint = f"; the cache's ids look like {preview(fs.video_ids, 3)}"
        raise AqaError(
            f"{cache}: {len(missing)} labelled video(s) that the splits need have no features "
            f"({labels.source}): {preview(missing)}{hint}"
        )
    if failed:
        raise AqaError(
            f"{cache}: extraction failed for {len(failed)} video(s) that the splits need: "
            f"{preview(failed, 5)}"
        )
    unused = fs.n_videos - len(set(rows[rows >= 0].tolist()))
    if unused:
        log.info(
            "%s: %d cached video(s) have no label in %s and are not used",
            cache,
            unused,
            labels.source,
        )
    return rows


@dataclass
class TrainData:
    """Everything a run reads, indexed by label row. Scores are normalised (/ scale)."""

    labels: LabelSet
    scale: float
    feature_rows: np.ndarray  # (N,) row in the FeatureSet, -1 when unused
    video: Tensor  # (N, D) float32 per-video mean features (zeros for unused rows)
    fields: dict[str, Tensor]  # "target" (N,), and difficulty, judges, subscores, class_id
    # when the labels have them
    clip_features: Tensor | None  # (C + 1, D) float32; the last row is the zero pad
    clip_start: Tensor | None  # (N,) int64 first clip row of each label row
    clip_count: Tensor | None  # (N,) int64
    clip_frames: np.ndarray | None  # (C, 2) source frames [first, last + 1) of each clip

    @property
    def feature_dim(self) -> int:
        return int(self.video.shape[1])

    @classmethod
    def build(
        cls, fs: FeatureSet, labels: LabelSet, scale: float, clips: bool, cache: str
    ) -> TrainData:
        rows = align(labels, fs, cache)
        ok = rows >= 0
        video = np.zeros((labels.n, fs.feature_dim), dtype=np.float32)
        video[ok] = fs.video_features[rows[ok]]
        if not np.isfinite(video[ok]).all():
            bad = [
                labels.video_ids[r] for r in np.flatnonzero(ok) if not np.isfinite(video[r]).all()
            ]
            raise AqaError(f"{cache}: non-finite features for {preview(bad)}")
        fields = {"target": torch.tensor(labels.score / scale, dtype=torch.float32)}
        if labels.difficulty is not None:
            fields["difficulty"] = torch.tensor(labels.difficulty, dtype=torch.float32)
        if labels.judges is not None:
            fields["judges"] = torch.tensor(labels.judges / scale, dtype=torch.float32)
        if labels.subscores is not None:
            fields["subscores"] = torch.tensor(labels.subscores / scale, dtype=torch.float32)
        if labels.class_id is not None:
            fields["class_id"] = torch.tensor(labels.class_id, dtype=torch.int64)
        clip_features = clip_start = clip_count = clip_frames = None
        if clips:
            clip_features, clip_start, clip_count, clip_frames = _gather_clips(fs, rows)
        return cls(
            labels=labels,
            scale=float(scale),
            feature_rows=rows,
            video=torch.from_numpy(video),
            fields=fields,
            clip_features=clip_features,
            clip_start=clip_start,
            clip_count=clip_count,
            clip_frames=clip_frames,
        )

    def to(self, device: torch.device) -> TrainData:
        """Move the feature and label tensors (clip offsets stay on the CPU)."""
        self.video = self.video.to(device)
        self.fields = {k: v.to(device) for k, v in self.fields.items()}
        if self.clip_features is not None:
            self.clip_features = self.clip_features.to(device)
        return self

    def batch_fields(self, rows: Tensor) -> dict[str, Tensor]:
        """Label fields for rows (S, B) -> each (S, B, ...)."""
        return {k: take_rows(v, rows) for k, v in self.fields.items()}


def _gather_clips(fs: FeatureSet, rows: np.ndarray) -> tuple[Tensor, Tensor, Tensor, np.ndarray]:
    """Clip features of the used rows, concatenated, plus a zero pad row at the end."""
    starts = np.zeros(len(rows), dtype=np.int64)
    counts = np.zeros(len(rows), dtype=np.int64)
    pieces, frames = [], []
    total = 0
    for r, i in enumerate(rows):
        if i < 0:
            continue
        clips = fs.clips(int(i))
        starts[r], counts[r] = total, len(clips)
        pieces.append(clips)
        frames.append(fs.frames(int(i)))
        total += len(clips)
    d = fs.feature_dim
    feats = np.concatenate(pieces + [np.zeros((1, d))]).astype(np.float32)
    frame_arr = np.concatenate(frames) if frames else np.zeros((0, 2), dtype=np.int64)
    return torch.from_numpy(feats), torch.from_numpy(starts), torch.from_numpy(counts), frame_arr
