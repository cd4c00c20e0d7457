"""Streaming decode: frames of a video file (PyAV) or a frame folder, grouped into clips.

A video is never held whole in memory: frames are decoded in order, only the ones a clip
needs are converted and kept, and each clip is emitted as soon as its last frame arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from aqa_pipeline.extract.preprocess import Preprocess
from aqa_pipeline.extract.sources import VideoSource, list_frame_files

log = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """A video that cannot be read as needed (recorded as that video's failure)."""


class FrameCountError(DecodeError):
    """Fewer frames decoded than the container's packets promised; `decoded` is the
    number of frames that really decode, so the clips can be planned again."""

    def __init__(self, message: str, decoded: int):
        super().__init__(message)
        self.decoded = decoded


@dataclass(frozen=True)
class Probe:
    """Frames in the trimmed source and its frame rate (0 when unknown)."""

    num_frames: int
    fps: float
    start: int  # first frame of the trim in the file


def _trim(source: VideoSource, total: int, fps: float) -> Probe:
    """Apply the manifest's start_frame..end_frame (inclusive) to a source of `total` frames;
    an end_frame past the last frame is clamped to it, with a warning."""
    start = source.start_frame or 0
    end = total - 1 if source.end_frame is None else min(source.end_frame, total - 1)
    if total == 0:
        raise DecodeError(f"{source.path}: no frames")
    if source.end_frame is not None and source.end_frame > total - 1:
        log.warning(
            "video %s: manifest end_frame %d is past the end of %s, which has %d frames "
            "(0..%d); using frames up to %d",
            source.video_id, source.end_frame, source.path, total, total - 1, total - 1,
        )  # fmt: skip
    if start > end:
        raise DecodeError(
            f"{source.path}: trim start_frame {start} is past the last frame {total - 1}"
        )
    return Probe(end - start + 1, fps, start)


def probe(source: VideoSource) -> Probe:
    """Count frames (demuxing packets, no decoding) and read the frame rate."""
    path = source.path
    if not path.exists():
        raise DecodeError(f"{path}: file not found")
    if source.kind == "frames":
        files = list_frame_files(path)
        return _trim(source, len(files), 0.0)
    if path.stat().st_size == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            total = sum(1 for p in container.demux(stream) if p.size > 0 and not p.is_discard)
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{path}: not a readable video ({exc})") from exc
    return _trim(source, total, fps)


def iter_frames(
    source: VideoSource, info: Probe, wanted: np.ndarray, preprocess: Preprocess
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, (H, W, 3) uint8) for each index in sorted unique `wanted` (relative to
    the trim), in order."""
    if len(wanted) == 0:
        return
    wanted_set = set(int(i) for i in wanted)
    last = int(wanted[-1])
    if source.kind == "frames":
        files = list_frame_files(source.path)
        for rel in sorted(wanted_set):
            file = files[info.start + rel]
            try:
                with Image.open(file) as img:
                    yield rel, preprocess(img)
            except (OSError, ValueError) as exc:
                raise DecodeError(f"{file}: cannot read image ({exc})") from exc
        return
    decoded = 0
    try:
        with av.open(str(source.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                rel = i - info.start
                if rel > last:
                    break
                if rel in wanted_set:
                    yield rel, preprocess(frame.to_image())
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{source.path}: decoding failed after {decoded} frames ({exc})") from exc
    if decoded - info.start <= last:
        raise FrameCountError(
            f"{source.path}: truncated or corrupt: {info.start + info.num_frames} frames in the "
            f"container but only {decoded} decodable (a clip needs frame {info.start + last})",
            decoded,
        )


def iter_clips(
    source: VideoSource, info: Probe, plan: np.ndarray, preprocess: Preprocess
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (clip index, (L, H, W, 3) uint8) as soon as each clip of `plan` (K, L) is
    complete; frames no remaining clip needs are dropped."""
    order = np.argsort(plan.max(axis=1), kind="stable")
    ends = plan.max(axis=1)[order]
    # lowest frame any clip from position j onwards still needs
    needed_from = np.minimum.accumulate(plan.min(axis=1)[order][::-1])[::-1]
    buffer: dict[int, np.ndarray] = {}
    k = 0
    for rel, frame in iter_frames(source, info, np.unique(plan), preprocess):
        buffer[rel] = frame
        while k < len(order) and ends[k] <= rel:
            clip = order[k]
            yield int(clip), np.stack([buffer[int(j)] for j in plan[clip]])
            k += 1
            low = needed_from[k] if k < len(order) else rel + 1
            for j in [j for j in buffer if j < low]:
                del buffer[j]
