"""Small synthetic videos made with PyAV: for the demo and the tests (no downloads)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path, frames: Iterable[np.ndarray], fps: int = 25, codec: str = "libx264"
) -> Path:
    """Encode (H, W, 3) uint8 frames to `path` with PyAV (codec: libx264, mpeg4, msmpeg4,
    mjpeg ...). H and W must be even."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
                if codec == "libx264":
                    stream.options = {"preset": "ultrafast"}
            img = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(img):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return path


def moving_square(
    n_frames: int,
    size: tuple[int, int] = (96, 128),
    speed: float = 2.0,
    seed: int = 0,
    angle: float | None = None,
    start: tuple[float, float] | None = None,
    background_seed: int | None = None,
) -> Iterable[np.ndarray]:
    """A bright square bouncing at `speed` pixels per frame over a textured background;
    yields (H, W, 3) uint8 frames one at a time (never the whole video). Direction, start
    (y, x), colour and background are drawn from `seed` unless given."""
    rng = np.random.default_rng(seed)
    h, w = size
    bg_rng = rng if background_seed is None else np.random.default_rng(background_seed)
    background = bg_rng.integers(20, 80, size=(h, w, 3), dtype=np.uint8)
    side = max(4, h // 6)
    angle = rng.uniform(0, 2 * np.pi) if angle is None else angle
    vy, vx = speed * np.sin(angle), speed * np.cos(angle)
    y, x = (rng.uniform(0, h - side), rng.uniform(0, w - side)) if start is None else start
    colour = rng.integers(180, 256, size=3, dtype=np.uint8)
    for _ in range(n_frames):
        frame = background.copy()
        frame[int(y) : int(y) + side, int(x) : int(x) + side] = colour
        yield frame
        y, x = y + vy, x + vx
        if not 0 <= y <= h - side:
            vy, y = -vy, min(max(y, 0), h - side)
        if not 0 <= x <= w - side:
            vx, x = -vx, min(max(x, 0), w - side)


def make_demo_videos(
    folder: Path,
    n_videos: int = 64,
    n_frames: int = 64,
    seed: int = 0,
    size: tuple[int, int] = (96, 128),
    test_fraction: float = 0.25,
) -> Path:
    """Videos of a square moving at different speeds over one shared background, from about
    the same start and direction; the score is a known function of the motion:
    score = 10 * speed (pixels per frame). Writes `labels.csv`
    (video_id,score,split) beside the videos and returns its path."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    speeds = rng.uniform(0.0, 6.0, size=n_videos)
    n_test = max(1, round(n_videos * test_fraction))
    splits = ["test"] * n_test + ["train"] * (n_videos - n_test)
    rng.shuffle(splits)
    rows = []
    for i, (speed, split) in enumerate(zip(speeds, splits, strict=True)):
        vid = f"video_{i:03d}"
        jitter = np.random.default_rng([seed, i])
        frames = moving_square(
            n_frames, size, float(speed), seed=seed,
            angle=0.6 + jitter.uniform(-0.1, 0.1),
            start=(size[0] / 3 + jitter.uniform(-2, 2), size[1] / 4 + jitter.uniform(-2, 2)),
            background_seed=seed,
        )  # fmt: skip
        write_video(folder / f"{vid}.mp4", frames)
        rows.append((vid, round(10.0 * float(speed), 4), split))
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video_id", "score", "split"])
        writer.writerows(rows)
    return labels
