"""HDF5 feature cache: schema, atomic writer and in-memory reader.

Layout of a cache file (N videos, C clips in all, D feature dims):

    video_ids       (N,)    str      unique, relative to the input root
    status          (N,)    int8     0 ok, 1 failed
    error           (N,)    str      failure reason ('' when ok)
    sources         (N,)    str      where the video came from (path, trim)
    num_frames      (N,)    int64    frames in the (trimmed) source
    fps             (N,)    float64  source frame rate (0 when unknown)
    video_features  (N, D)  float    per-video mean of its clip features (NaN if failed)
    clip_offsets    (N+1,)  int64    clips of video i are rows offsets[i]:offsets[i+1]
    clip_features   (C, D)  float    per-clip features
    clip_frames     (C, 2)  int64    [first, last + 1) source frame of every clip

Attributes: `format_version`, `cache_key` (hash of `key_fields`), `key_fields` (JSON: what
changes the numbers: backbone, weights hash, sampling, preprocessing, dtype) and
`provenance` (JSON: key fields plus versions, input list, shard, command, time).

A cache is written whole to a temporary name in the same folder and moved into place with
os.replace, so a file under the final name is always complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from aqa_pipeline.config import config_hash, diff_fields
from aqa_pipeline.errors import AqaError, MismatchError

FORMAT_VERSION = 1
STATUS_OK = 0
STATUS_FAILED = 1
_STR = h5py.string_dtype("utf-8")
_REQUIRED = (
    "video_ids",
    "status",
    "error",
    "video_features",
    "clip_offsets",
    "clip_features",
    "clip_frames",
)


@dataclass
class VideoRecord:
    """What extraction produced for one video (clip_features (T, D), clip_frames (T, 2))."""

    video_id: str
    source: str = ""
    status: int = STATUS_OK
    error: str = ""
    clip_features: np.ndarray | None = None
    clip_frames: np.ndarray | None = None
    num_frames: int = 0
    fps: float = 0.0
    video_feature: np.ndarray | None = None  # (D,) stored mean; computed from clips if None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass
class FeatureSet:
    """A whole cache in memory. Rows follow `video_ids`; failed videos have no clips."""

    video_ids: list[str]
    status: np.ndarray  # (N,) int8
    errors: list[str]
    sources: list[str]
    num_frames: np.ndarray  # (N,) int64
    fps: np.ndarray  # (N,) float64
    video_features: np.ndarray  # (N, D)
    clip_offsets: np.ndarray  # (N+1,) int64
    clip_features: np.ndarray  # (C, D)
    clip_frames: np.ndarray  # (C, 2) int64
    key_fields: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def cache_key(self) -> str:
        return config_hash(self.key_fields)

    @property
    def n_videos(self) -> int:
        return len(self.video_ids)

    @property
    def n_clips(self) -> int:
        return int(self.clip_features.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.video_features.shape[1])

    @property
    def ok_mask(self) -> np.ndarray:
        return self.status == STATUS_OK

    def index(self, video_id: str) -> int:
        try:
            return self._index[video_id]
        except AttributeError:
            self._index = {v: i for i, v in enumerate(self.video_ids)}
            return self._index[video_id]

    def clips(self, i: int) -> np.ndarray:
        """Clip features of video row i, (T_i, D)."""
        return self.clip_features[self.clip_offsets[i] : self.clip_offsets[i + 1]]

    def frames(self, i: int) -> np.ndarray:
        """Frame ranges of video row i's clips, (T_i, 2) [first, last + 1)."""
        return self.clip_frames[self.clip_offsets[i] : self.clip_offsets[i + 1]]

    def failed(self) -> list[dict[str, str]]:
        return [
            {"video_id": v, "error": e}
            for v, s, e in zip(self.video_ids, self.status, self.errors, strict=True)
            if s != STATUS_OK
        ]

    def records(self) -> Iterable[VideoRecord]:
        for i, vid in enumerate(self.video_ids):
            yield VideoRecord(
                video_id=vid,
                source=self.sources[i],
                status=int(self.status[i]),
                error=self.errors[i],
                clip_features=self.clips(i),
                clip_frames=self.frames(i),
                num_frames=int(self.num_frames[i]),
                fps=float(self.fps[i]),
                video_feature=self.video_features[i],
            )

    @classmethod
    def from_records(
        cls,
        records: Iterable[VideoRecord],
        feature_dim: int,
        dtype: str | np.dtype = "float32",
        key_fields: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> FeatureSet:
        """Assemble records (any order is kept) into one FeatureSet."""
        records = list(records)
        ids = [r.video_id for r in records]
        if len(set(ids)) != len(ids):
            dup = sorted({v for v in ids if ids.count(v) > 1})
            raise AqaError(f"duplicate video ids: {dup[:5]}")
        dtype = np.dtype(dtype)
        offsets = [0]
        feats, frames = [], []
        means = np.full((len(records), feature_dim), np.nan, dtype=dtype)
        for i, r in enumerate(records):
            if r.ok and r.clip_features is not None and len(r.clip_features):
                cf = np.asarray(r.clip_features, dtype=np.float32)
                if cf.ndim != 2 or cf.shape[1] != feature_dim:
                    raise AqaError(
                        f"video {r.video_id}: clip features of shape {cf.shape}, "
                        f"expected (T, {feature_dim})"
                    )
                feats.append(cf.astype(dtype))
                frames.append(np.asarray(r.clip_frames, dtype=np.int64).reshape(-1, 2))
                mean = r.video_feature if r.video_feature is not None else cf.mean(axis=0)
                means[i] = np.asarray(mean).astype(dtype)
                offsets.append(offsets[-1] + len(cf))
            else:
                offsets.append(offsets[-1])
        return cls(
            video_ids=ids,
            status=np.array([r.status for r in records], dtype=np.int8),
            errors=[r.error for r in records],
            sources=[r.source for r in records],
            num_frames=np.array([r.num_frames for r in records], dtype=np.int64),
            fps=np.array([r.fps for r in records], dtype=np.float64),
            video_features=means,
            clip_offsets=np.array(offsets, dtype=np.int64),
            clip_features=(
                np.concatenate(feats) if feats else np.zeros((0, feature_dim), dtype=dtype)
            ),
            clip_frames=np.concatenate(frames) if frames else np.zeros((0, 2), dtype=np.int64),
            key_fields=dict(key_fields or {}),
            provenance=dict(provenance or {}),
        )


def write_features(path: str | Path, fs: FeatureSet) -> Path:
    """Write `fs` to `path` atomically (temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["cache_key"] = fs.cache_key
            f.attrs["key_fields"] = json.dumps(fs.key_fields, sort_keys=True, default=str)
            f.attrs["provenance"] = json.dumps(fs.provenance, sort_keys=True, default=str)
            f.create_dataset("video_ids", data=np.array(fs.video_ids, dtype=object), dtype=_STR)
            f.create_dataset("status", data=fs.status.astype(np.int8))
            f.create_dataset("error", data=np.array(fs.errors, dtype=object), dtype=_STR)
            f.create_dataset("sources", data=np.array(fs.sources, dtype=object), dtype=_STR)
            f.create_dataset("num_frames", data=fs.num_frames.astype(np.int64))
            f.create_dataset("fps", data=fs.fps.astype(np.float64))
            f.create_dataset("video_features", data=fs.video_features)
            f.create_dataset("clip_offsets", data=fs.clip_offsets.astype(np.int64))
            chunks = (min(max(fs.n_clips, 1), 1024), fs.feature_dim) if fs.n_clips else None
            f.create_dataset("clip_features", data=fs.clip_features, chunks=chunks)
            f.create_dataset("clip_frames", data=fs.clip_frames.astype(np.int64))
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise AqaError(f"{path}: no such feature cache")
    if path.is_dir():
        raise AqaError(f"{path}: is a directory, expected an HDF5 feature cache")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise AqaError(f"{path}: not a readable HDF5 file ({exc})") from exc
    missing = [k for k in _REQUIRED if k not in f]
    if missing or "cache_key" not in f.attrs:
        f.close()
        what = ", ".join(missing) if missing else "the cache_key attribute"
        raise AqaError(f"{path}: not an aqa feature cache (missing {what})")
    return f


def _strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]


def read_provenance(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(key_fields, provenance) of a cache without loading its arrays."""
    with _open(path) as f:
        return json.loads(f.attrs["key_fields"]), json.loads(f.attrs["provenance"])


def read_features(path: str | Path, clips: bool = True) -> FeatureSet:
    """Load a whole cache into memory. `clips=False` skips the (C, D) clip array."""
    with _open(path) as f:
        d = f["video_features"].shape[1]
        return FeatureSet(
            video_ids=_strings(f["video_ids"]),
            status=f["status"][()].astype(np.int8),
            errors=_strings(f["error"]),
            sources=_strings(f["sources"]) if "sources" in f else [""] * len(f["video_ids"]),
            num_frames=f["num_frames"][()] if "num_frames" in f else np.zeros(0, np.int64),
            fps=f["fps"][()] if "fps" in f else np.zeros(0),
            video_features=f["video_features"][()],
            clip_offsets=f["clip_offsets"][()],
            clip_features=(
                f["clip_features"][()]
                if clips
                else np.zeros((0, d), dtype=f["clip_features"].dtype)
            ),
            clip_frames=f["clip_frames"][()],
            key_fields=json.loads(f.attrs["key_fields"]),
            provenance=json.loads(f.attrs["provenance"]),
        )


def check_key(
    actual: Mapping[str, Any], expected: Mapping[str, Any], what: str, subset: bool = False
) -> None:
    """Raise MismatchError (exit 3) naming every field where `actual` differs from `expected`.

    With subset=True only the fields present in `expected` are compared (a config that
    requires e.g. only `backbone.name`).
    """
    if subset:
        from aqa_pipeline.config import flatten

        fa, fe = flatten(actual), flatten(expected)
        fields = {k: (fa.get(k), v) for k, v in fe.items() if fa.get(k) != v}
    else:
        fields = diff_fields(actual, expected)
    if fields:
        raise MismatchError(f"{what}: cache key does not match", fields)
