"""Work in progress of an extraction: one small file per finished video.

`CACHE.h5.parts/` sits beside the cache. Each finished video (done or failed) is written
to its own `.npz` under a temporary name and renamed into place, so a job killed at any
moment loses at most the videos in flight. The folder's `meta.json` holds the cache key:
resuming with a different recipe or backbone is refused. A lock file keeps two processes
from writing the same cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from aqa_pipeline.config import config_hash
from aqa_pipeline.errors import AqaError
from aqa_pipeline.features.store import VideoRecord, check_key


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


class PartStore:
    """Per-video result files of one extraction into `output`."""

    def __init__(self, output: Path, key_fields: dict[str, Any]):
        self.dir = parts_dir(output)
        self.dir.mkdir(parents=True, exist_ok=True)
        # A POSIX record lock belongs to this process only: data-loader workers forked from
        # it do not inherit it, so a job killed with -9 frees the cache at once even while
        # its orphaned workers are still winding down (a flock would stay held by them).
        self._lock = open(self.dir / "lock", "w")  # noqa: SIM115 (held for the job's life)
        try:
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise AqaError(f"{output}: another extraction is writing this cache") from None
        meta = self.dir / "meta.json"
        if meta.exists():
            saved = json.loads(meta.read_text())
            check_key(saved["key_fields"], key_fields, f"{self.dir} (unfinished earlier run)")
        else:
            _atomic_write(
                meta,
                json.dumps(
                    {"cache_key": config_hash(key_fields), "key_fields": key_fields}, default=str
                ).encode(),
            )

    def _path(self, video_id: str) -> Path:
        return self.dir / f"v-{hashlib.sha1(video_id.encode()).hexdigest()[:20]}.npz"

    def put(self, record: VideoRecord) -> None:
        meta = {
            "video_id": record.video_id, "source": record.source, "status": record.status,
            "error": record.error, "num_frames": record.num_frames, "fps": record.fps,
        }  # fmt: skip
        feats = record.clip_features if record.clip_features is not None else np.zeros((0, 0))
        frames = record.clip_frames if record.clip_frames is not None else np.zeros((0, 2))
        path = self._path(record.video_id)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, clip_features=feats.astype(np.float32), clip_frames=frames.astype(np.int64),
                     meta=np.array(json.dumps(meta)))  # fmt: skip
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def records(self) -> dict[str, VideoRecord]:
        """Every finished video in the folder; unreadable leftovers are ignored (redone)."""
        out: dict[str, VideoRecord] = {}
        for path in sorted(self.dir.glob("v-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    rec = VideoRecord(
                        video_id=meta["video_id"], source=meta["source"],
                        status=int(meta["status"]), error=meta["error"],
                        clip_features=z["clip_features"], clip_frames=z["clip_frames"],
                        num_frames=int(meta["num_frames"]), fps=float(meta["fps"]),
                    )  # fmt: skip
            except (OSError, ValueError, KeyError):
                continue
            out[rec.video_id] = rec
        return out

    def close(self, remove: bool) -> None:
        self._lock.close()
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
