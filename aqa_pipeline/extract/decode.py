"""Streaming decode: frames of a video file (PyAV or TorchCodec) or a frame folder, grouped
into clips.

A video is never held whole in memory: frames are decoded in order, only the ones a clip
needs are converted and kept, and each clip is emitted as soon as its last frame arrives.

Frame numbers are the decoder's output order (presentation order), counted from 0. Where a
file's timestamps are trustworthy (`Probe.seekable`), a sparse recipe skips the frames
between its clips by seeking to the keyframe before the next wanted frame; every frame after
a seek is checked against the timestamp table, and anything unexpected falls back to
decoding in order, so seeking never changes which frame is returned.

Decoders (`DECODERS`): `pyav` (default) and `torchcodec` (optional: `pip install
'aqa-pipeline[torchcodec]'` plus FFmpeg's shared libraries, e.g. Debian's libavcodec59,
libavformat59, libavutil57, libswscale6, libswresample4, libavdevice59, libavfilter8).
Both convert YUV to RGB with FFmpeg's swscale and return the same frames for the same
numbers: bit-exact for h264 and mjpeg (the shared videos, synthetic ones); for MPEG-4 part 2,
whose inverse DCT is not fixed bit-exactly and which TorchCodec decodes with the system's
FFmpeg and PyAV with its own, within 2 grey levels on about 1e-5 of the values.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.sources import VideoSource, list_frame_files

log = logging.getLogger(__name__)

DECODERS = ("pyav", "torchcodec")
TORCHCODEC_INSTALL = (
    "pip install 'aqa-pipeline[torchcodec]' (a torchcodec wheel built for your torch) and "
    "FFmpeg's shared libraries (Debian/Ubuntu: apt-get install libavcodec59 libavformat59 "
    "libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8, or your release's "
    "versions)"
)

Transform = Callable[[np.ndarray], np.ndarray]


class DecodeError(RuntimeError):
    """A video that cannot be read as needed (recorded as that video's failure)."""


class FrameCountError(DecodeError):
    """Fewer frames decoded than the container's packets promised; `decoded` is the
    number of frames that really decode, so the clips can be planned again."""

    def __init__(self, message: str, decoded: int):
        super().__init__(message)
        self.decoded = decoded


class _NotSeekable(Exception):
    """A seek landed somewhere unexpected: decode the rest in order."""


@dataclass(frozen=True)
class Probe:
    """Frames in the trimmed source and its frame rate (0 when unknown).

    seekable: the file's timestamps locate its frames, so seeking is exact; then `pts` holds
    every frame's presentation timestamp in frame order (file numbering, not the trim's) and
    `keyframes` the numbers of its keyframes."""

    num_frames: int
    fps: float
    start: int  # first frame of the trim in the file
    seekable: bool = False
    pts: tuple[int, ...] = ()
    keyframes: tuple[int, ...] = ()


@dataclass
class DecodeStats:
    """Where a worker's time goes, summed over its videos (seconds, counts)."""

    probe_s: float = 0.0
    decode_s: float = 0.0  # demux + decode (FFmpeg), frames skipped included
    convert_s: float = 0.0  # YUV -> RGB at native size
    preprocess_s: float = 0.0  # resize, crop, squash
    frames_decoded: int = 0
    frames_kept: int = 0
    seeks: int = 0
    fallbacks: int = 0  # seeks that landed wrong: decoded in order instead
    busy_s: float = 0.0  # a worker's whole time on its videos, waits for the consumer excluded

    def add(self, other: DecodeStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _trim(source: VideoSource, total: int, fps: float, **seek) -> Probe:
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
    return Probe(end - start + 1, fps, start, **seek)


def _seek_table(packets: list[tuple[int | None, bool]], reorders: bool) -> dict:
    """Probe fields for seeking from the packets' (pts, keyframe) in decode order: seekable
    only when every packet has a distinct timestamp, there is more than one keyframe, and a
    stream whose decoder reorders frames shows that reordering in its timestamps (a file
    whose timestamps run in decode order, as some writers make them, cannot be located by
    timestamp: frames are then numbered by decoding in order)."""
    pts = [p for p, _ in packets]
    if not pts or any(p is None for p in pts) or len(set(pts)) != len(pts):
        return {}
    in_decode_order = all(a < b for a, b in zip(pts, pts[1:], strict=False))
    if reorders and in_decode_order:
        return {}
    ordered = sorted(pts)
    number = {p: i for i, p in enumerate(ordered)}
    keyframes = sorted(number[p] for p, key in packets if key)
    if len(keyframes) < 2 or keyframes[0] != 0:
        return {}
    return {"seekable": True, "pts": tuple(ordered), "keyframes": tuple(keyframes)}


def probe(source: VideoSource) -> Probe:
    """Count frames (demuxing packets, no decoding), read the frame rate and, for seeking,
    the timestamps and keyframes."""
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
            packets = [
                (p.pts, bool(p.is_keyframe))
                for p in container.demux(stream)
                if p.size > 0 and not p.is_discard
            ]
            reorders = bool(getattr(stream.codec_context, "has_b_frames", True))
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{path}: not a readable video ({exc})") from exc
    return _trim(source, len(packets), fps, **_seek_table(packets, reorders))


def check_decoder(decoder: str) -> None:
    """AqaError (exit 1) when `decoder` is unknown or not installed, saying what to install."""
    if decoder not in DECODERS:
        raise AqaError(f"--decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if decoder == "torchcodec":
        try:
            import torchcodec.decoders  # noqa: F401
        except (ImportError, OSError, RuntimeError) as exc:
            raise AqaError(
                f"--decoder torchcodec: torchcodec is not usable here ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'not installed'}). Install it: "
                f"{TORCHCODEC_INSTALL}; or use --decoder pyav"
            ) from None


_ALLOCATOR_TUNED = False
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def tune_allocator() -> bool:
    """Keep freed frame-sized buffers (about 1 MB each) in the heap of this process (glibc).

    Every converted frame is a fresh allocation; by default glibc serves each from new
    pages (mmap, or a heap it trims on free), and the ~140 page faults per 640x480 frame
    cost more than the YUV->RGB conversion itself. With a 32 MB mmap threshold and a 256 MB
    trim threshold they are reused instead (the peak memory is unchanged). Once per process;
    False where there is no glibc."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, 256 << 20) == 1
    _ALLOCATOR_TUNED = ok
    return ok


# ---------------------------------------------------------------------------- readers


# a seek restarts the decoder (and its threads): only worth it past a few frames. On a
# 3,000-frame mpeg4 AVI with a keyframe every 12, 160 frames by linspace took 0.70 s with
# 8 (154 seeks), 0.84 s with 16 (45 seeks), 0.98-1.3 s without seeking.
MIN_SKIP = 8


def _wanted_after_seek(info: Probe, wanted: list[int]) -> Iterator[tuple[int, int]]:
    """(keyframe, position in `wanted`) each time a seek to the keyframe before wanted[pos]
    (file numbers) skips at least MIN_SKIP frames that decoding on would go through."""
    keys = np.asarray(info.keyframes)
    pos_after = -1  # the frame the decoder would output next, minus one
    for pos, frame in enumerate(wanted):
        key = int(keys[np.searchsorted(keys, frame, side="right") - 1])
        if key - (pos_after + 1) >= MIN_SKIP:
            yield key, pos
        pos_after = frame


def _pyav_frames(
    source: VideoSource, info: Probe, wanted: list[int], stats: DecodeStats
) -> Iterator[tuple[int, av.VideoFrame]]:
    """(file frame number, frame) for each of the sorted `wanted` file numbers, in order."""
    done = 0  # wanted[:done] were yielded
    decoded = 0
    try:
        if info.seekable:
            try:
                with av.open(str(source.path)) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    for item in _pyav_seeking(container, stream, info, wanted, stats):
                        done += 1
                        yield item
                return
            except _NotSeekable as why:  # the rest in order, from the start of the file
                stats.fallbacks += 1
                log.debug("%s: %s; decoding in order", source.path, why)
        with av.open(str(source.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            last = wanted[-1]
            t0 = time.perf_counter()
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i > last:
                    break
                if done < len(wanted) and i == wanted[done]:
                    stats.decode_s += time.perf_counter() - t0
                    done += 1
                    yield i, frame
                    t0 = time.perf_counter()
            stats.decode_s += time.perf_counter() - t0
            stats.frames_decoded += decoded
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{source.path}: decoding failed after {decoded} frames ({exc})") from exc
    if done < len(wanted):
        raise FrameCountError(
            f"{source.path}: truncated or corrupt: {info.start + info.num_frames} frames in the "
            f"container but only {decoded} decodable (a clip needs frame {wanted[done]})",
            decoded,
        )


def _pyav_seeking(container, stream, info: Probe, wanted: list[int], stats: DecodeStats):
    """The seeking reader: `wanted` file numbers, reached by seeking to the keyframe before
    each stretch; raises _NotSeekable on anything but the frames the table promises."""
    number = {p: i for i, p in enumerate(info.pts)}
    starts = dict((pos, key) for key, pos in _wanted_after_seek(info, wanted))
    pos = 0
    while pos < len(wanted):
        key = starts.get(pos, 0)
        if key > 0 or pos > 0:
            container.seek(info.pts[key], stream=stream, backward=True, any_frame=False)
            stats.seeks += 1
        expected = key
        t0 = time.perf_counter()
        for frame in container.decode(stream):
            stats.frames_decoded += 1
            i = number.get(frame.pts)
            if i is None:
                raise _NotSeekable(f"a frame with an unknown timestamp {frame.pts}")
            if i < key:  # a leading frame of an open GOP: not ours
                continue
            if i != expected:
                raise _NotSeekable(f"frame {i} decoded where frame {expected} was due")
            if i == key and not frame.key_frame:
                raise _NotSeekable(f"frame {i} should be a keyframe")
            expected += 1
            if i == wanted[pos]:
                stats.decode_s += time.perf_counter() - t0
                yield i, frame
                t0 = time.perf_counter()
                pos += 1
                if pos == len(wanted) or pos in starts:
                    break
        else:
            raise _NotSeekable(f"the stream ended before frame {wanted[pos]}")
        stats.decode_s += time.perf_counter() - t0


def _torchcodec_frames(
    source: VideoSource, info: Probe, wanted: list[int], stats: DecodeStats, chunk: int = 32
) -> Iterator[tuple[int, np.ndarray]]:
    """(file frame number, (H, W, 3) uint8) for each of the sorted `wanted` file numbers.
    Seekable files: `get_frames_at` (TorchCodec seeks where it pays); others: consecutive
    ranges from where decoding stands, so nothing relies on the timestamps."""
    from torchcodec.decoders import VideoDecoder

    t0 = time.perf_counter()
    try:
        decoder = VideoDecoder(
            str(source.path), dimension_order="NHWC", seek_mode="exact", num_ffmpeg_threads=0
        )
        available = decoder.metadata.num_frames
    except (RuntimeError, ValueError) as exc:
        raise DecodeError(f"{source.path}: not a readable video (torchcodec: {exc})") from exc
    stats.decode_s += time.perf_counter() - t0
    if available is not None and available <= wanted[-1]:
        raise FrameCountError(
            f"{source.path}: truncated or corrupt: {info.start + info.num_frames} frames in the "
            f"container but only {available} decodable (a clip needs frame {wanted[-1]})",
            available,
        )
    position = 0
    for a in range(0, len(wanted), chunk):
        part = wanted[a : a + chunk]
        t0 = time.perf_counter()
        try:
            if info.seekable:
                frames = decoder.get_frames_at(part).data
                stats.frames_decoded += len(part)
                got = dict(zip(part, frames, strict=True))
            else:
                got, keep = {}, set(part)
                while position <= part[-1]:
                    stop = min(position + chunk, part[-1] + 1)
                    batch = decoder.get_frames_in_range(position, stop).data
                    stats.frames_decoded += len(batch)
                    got.update((position + k, batch[k]) for k in range(len(batch))
                               if position + k in keep)  # fmt: skip
                    position = stop
        except (RuntimeError, IndexError, ValueError) as exc:
            raise DecodeError(f"{source.path}: decoding failed (torchcodec: {exc})") from exc
        stats.decode_s += time.perf_counter() - t0
        for i in part:
            yield i, got[i].numpy()


def iter_frames(
    source: VideoSource,
    info: Probe,
    wanted: np.ndarray,
    transform: Transform | None = None,
    decoder: str = "pyav",
    stats: DecodeStats | None = None,
    overlap: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, frame) for each index in sorted unique `wanted` (relative to the trim),
    in order: the (H, W, 3) uint8 RGB frame at native size, passed through `transform`
    ((H, W, 3) -> (h, w, 3) uint8, e.g. `Preprocess.frame`) when given.

    overlap: convert and transform in this many helper threads while this one keeps the
    decoder fed (PyAV; both release the GIL); 0: in this thread. For decode worker
    processes, whose torch runs one thread: `transform` must not touch shared state."""
    if len(wanted) == 0:
        return
    stats = stats if stats is not None else DecodeStats()

    lock = threading.Lock()

    def finish(rel: int, rgb: np.ndarray) -> tuple[int, np.ndarray]:
        if transform is None:
            with lock:
                stats.frames_kept += 1
            return rel, rgb
        t0 = time.perf_counter()
        out = transform(rgb)
        with lock:
            stats.frames_kept += 1
            stats.preprocess_s += time.perf_counter() - t0
        return rel, out

    if source.kind == "frames":
        files = list_frame_files(source.path)
        for rel in sorted(set(int(i) for i in wanted)):
            file = files[info.start + rel]
            t0 = time.perf_counter()
            try:
                with Image.open(file) as img:
                    rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise DecodeError(f"{file}: cannot read image ({exc})") from exc
            stats.decode_s += time.perf_counter() - t0
            stats.frames_decoded += 1
            yield finish(rel, rgb)
        return
    absolute = [info.start + int(i) for i in wanted]
    if decoder == "torchcodec":
        for i, rgb in _torchcodec_frames(source, info, absolute, stats):
            yield finish(i - info.start, rgb)
        return
    if decoder != "pyav":
        raise AqaError(f"--decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    # one reformatter for the whole video: PyAV's per-frame `to_ndarray` builds a new swscale
    # context for every frame, which costs more than decoding it
    # (one per thread: a swscale context is not shared between threads). One swscale thread:
    # its slice threads cost more CPU than they save beside the decoder's (0.25 vs 0.25-0.33
    # ms of CPU per 640x480 frame decoded and converted). The frame is read in place
    # (`rgb_view`), not copied.
    local = threading.local()

    def convert(item: tuple[int, av.VideoFrame]) -> tuple[int, np.ndarray]:
        i, frame = item
        if not hasattr(local, "reformatter"):
            local.reformatter = VideoReformatter()
        t0 = time.perf_counter()
        rgb = rgb_view(local.reformatter.reformat(frame, format="rgb24", threads=1))
        with lock:
            stats.convert_s += time.perf_counter() - t0
        return finish(i - info.start, rgb)

    frames = _pyav_frames(source, info, absolute, stats)
    if overlap:
        yield from _in_threads(frames, convert, overlap)
    else:
        yield from map(convert, frames)


def rgb_view(frame: av.VideoFrame) -> np.ndarray:
    """The (H, W, 3) uint8 pixels of an rgb24 frame, without a copy (a view of its buffer,
    which it keeps alive; rows may be padded to the frame's line size)."""
    plane = frame.planes[0]
    pixels = np.frombuffer(plane, np.uint8)
    shape = (frame.height, frame.width, 3)
    return np.lib.stride_tricks.as_strided(pixels, shape, (plane.line_size, 3, 1))


def _in_threads(items: Iterable, fn: Callable, threads: int) -> Iterator:
    """fn(item) for each item, in order, computed by `threads` helper threads up to 2 items
    each ahead of the consumer, while this thread produces the next items."""
    depth = 2 * threads + 2
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aqa-convert") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def iter_clips(
    source: VideoSource,
    info: Probe,
    plan: np.ndarray,
    transform: Transform | None = None,
    decoder: str = "pyav",
    stats: DecodeStats | None = None,
    overlap: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (clip index, (L, H, W, 3) uint8) as soon as each clip of `plan` (K, L) is
    complete; frames no remaining clip needs are dropped. Frames are `transform`ed
    (`Preprocess.frame`), or native-size when `transform` is None; `overlap`: see
    `iter_frames`."""
    order = np.argsort(plan.max(axis=1), kind="stable")
    ends = plan.max(axis=1)[order]
    # lowest frame any clip from position j onwards still needs
    needed_from = np.minimum.accumulate(plan.min(axis=1)[order][::-1])[::-1]
    buffer: dict[int, np.ndarray] = {}
    k = 0
    frames = iter_frames(source, info, np.unique(plan), transform, decoder, stats, overlap)
    for rel, frame in frames:
        buffer[rel] = frame
        while k < len(order) and ends[k] <= rel:
            clip = order[k]
            yield int(clip), np.stack([buffer[int(j)] for j in plan[clip]])
            k += 1
            low = needed_from[k] if k < len(order) else rel + 1
            for j in [j for j in buffer if j < low]:
                del buffer[j]
