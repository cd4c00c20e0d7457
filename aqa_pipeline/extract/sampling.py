"""Clip sampling recipes: which frames of a video make each clip (indices only).

Every recipe maps (number of frames, frame rate) to an int array (K clips, L frames) of
frame indices into the (trimmed) video; nothing is random. Recipes (aqa_pipeline/configs/extract):

- `starts`     a window of `window` frames (anchored at the start or the end of the video),
               clips of `clip_len` frames at the given starts; a negative start counts from
               the window's end (-16 = the last 16 frames). MUSDL/DAE: window 103, starts
               0,10,...,80,-16; CoRe: anchor end, starts 0,10,...,80,86.
- `linspace`   `num_frames` indices spread evenly over the whole video, cut into clips of
               `clip_len` (JIGSAWS 160 -> 10 x 16; LOGO 768 -> 48 x 16).
- `consecutive` optional resampling to `target_fps`, then non-overlapping clips of
               `clip_len` (stride `stride`), the remainder trimmed evenly at both ends
               (GDLT/InterAQA: 25 fps, 32-frame clips).

A video shorter than its recipe needs raises TooShortError, unless the recipe sets
`pad: repeat_last` (indices past the end repeat the last frame).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from aqa_pipeline.config import Section, parse


class TooShortError(ValueError):
    """The video has fewer frames than the recipe needs (recorded as that video's failure)."""


COMMON = ("method", "clip_len", "pad", "source_fps")
PER_METHOD = {
    "starts": ("window", "anchor", "starts"),
    "linspace": ("num_frames",),
    "consecutive": ("stride", "target_fps", "trim"),
}


class Sampling(Section):
    """The `sampling:` section of a recipe. A key that only another method reads is refused,
    so a recipe states exactly what it uses. source_fps: the frame rate of frame folders."""

    model_config = ConfigDict(frozen=True)

    method: Literal["starts", "linspace", "consecutive"]
    clip_len: PositiveInt
    pad: Literal["none", "repeat_last"] = "none"
    source_fps: PositiveFloat | None = None
    # starts
    window: PositiveInt | None = None
    anchor: Literal["start", "end"] = "start"
    starts: list[int] | None = Field(default=None, min_length=1)
    # linspace
    num_frames: PositiveInt | None = None
    # consecutive
    stride: PositiveInt | None = None  # default: clip_len
    target_fps: PositiveFloat | None = None
    trim: Literal["even", "start"] = "even"

    @model_validator(mode="after")
    def _per_method(self) -> Sampling:
        mine = set(COMMON) | set(PER_METHOD[self.method])
        for key in sorted(self.model_fields_set - mine):
            other = next(m for m, keys in PER_METHOD.items() if key in keys)
            raise ValueError(f"sampling.{key} is for method {other}, not {self.method}")
        required = {"starts": ("window", "starts"), "linspace": ("num_frames",)}
        for key in required.get(self.method, ()):
            if getattr(self, key) is None:
                raise ValueError(f"sampling.{key} is required with method {self.method}")
        if self.method == "starts":
            assert self.window is not None and self.starts is not None
            starts = [s if s >= 0 else self.window + s for s in self.starts]
            if any(s < 0 or s + self.clip_len > self.window for s in starts):
                raise ValueError(
                    f"sampling.starts {self.starts} do not fit a window of {self.window} frames "
                    f"with clips of {self.clip_len}"
                )
        if self.method == "linspace" and self.num_frames % self.clip_len:
            raise ValueError(
                f"sampling.num_frames {self.num_frames} is not a multiple of clip_len "
                f"{self.clip_len}"
            )
        return self

    def key(self) -> dict[str, Any]:
        """The resolved fields the method reads (for the cache key; pad only when used)."""
        out = {k: getattr(self, k) for k in COMMON + PER_METHOD[self.method]}
        if self.method == "consecutive":
            out["stride"] = self.stride or self.clip_len
        if out["pad"] == "none":
            del out["pad"]
        return {k: v for k, v in out.items() if v is not None}


def as_sampling(cfg: Sampling | Mapping[str, Any]) -> Sampling:
    return parse(Sampling, cfg, "recipe", prefix="sampling.")


def _pad(indices: np.ndarray, n_frames: int, needed: int, cfg: Sampling) -> np.ndarray:
    if n_frames >= needed:
        return indices
    if cfg.pad == "repeat_last" and n_frames > 0:
        return np.minimum(indices, n_frames - 1)
    raise TooShortError(f"too short: the recipe needs {needed} frames, the video has {n_frames}")


def plan_starts(cfg: Sampling, n_frames: int) -> np.ndarray:
    window, clip_len = int(cfg.window), cfg.clip_len
    starts = [s if s >= 0 else window + s for s in cfg.starts]
    offset = 0
    if cfg.anchor == "end" and n_frames > window:
        offset = n_frames - window
    clips = np.array([np.arange(s, s + clip_len) for s in starts], dtype=np.int64) + offset
    return _pad(clips, n_frames, window, cfg)


def plan_linspace(cfg: Sampling, n_frames: int) -> np.ndarray:
    num, clip_len = int(cfg.num_frames), cfg.clip_len
    if n_frames < num and cfg.pad != "repeat_last":
        raise TooShortError(f"too short: the recipe needs {num} frames, the video has {n_frames}")
    if n_frames < 1:
        raise TooShortError("too short: the video has no frames")
    idx = np.linspace(0, n_frames - 1, num).astype(np.int64)
    return idx.reshape(num // clip_len, clip_len)


def resampled_indices(n_frames: int, fps: float, target_fps: float | None) -> np.ndarray:
    """Indices of the source frames nearest below each tick of `target_fps` (n_out,)."""
    if not target_fps or not fps or abs(fps - target_fps) < 1e-6:
        return np.arange(n_frames, dtype=np.int64)
    n_out = int(math.floor(n_frames * target_fps / fps + 1e-9))
    idx = np.floor(np.arange(n_out) * (fps / target_fps) + 1e-9).astype(np.int64)
    return np.minimum(idx, n_frames - 1)


def plan_consecutive(cfg: Sampling, n_frames: int, fps: float) -> np.ndarray:
    clip_len, stride, target = cfg.clip_len, int(cfg.stride or cfg.clip_len), cfg.target_fps
    if target and not fps:
        raise TooShortError("unknown frame rate: cannot resample to target_fps (set source_fps)")
    frames = resampled_indices(n_frames, fps, target)
    m = len(frames)
    if m < clip_len:
        frames = _pad(frames, m, clip_len, cfg)
        if len(frames) < clip_len:  # repeat_last on the resampled sequence
            frames = np.concatenate([frames, np.full(clip_len - len(frames), frames[-1])])
        m = len(frames)
    n_clips = (m - clip_len) // stride + 1
    used = (n_clips - 1) * stride + clip_len
    head = (m - used) // 2 if cfg.trim == "even" else 0
    starts = head + stride * np.arange(n_clips)
    return frames[starts[:, None] + np.arange(clip_len)[None, :]]


def plan_clips(cfg: Sampling | Mapping[str, Any], n_frames: int, fps: float = 0.0) -> np.ndarray:
    """(K, L) frame indices of a video with `n_frames` frames at `fps`, by recipe `cfg` (a
    `Sampling`, or a mapping validated as one)."""
    cfg = as_sampling(cfg)
    if cfg.method == "starts":
        return plan_starts(cfg, n_frames)
    if cfg.method == "linspace":
        return plan_linspace(cfg, n_frames)
    return plan_consecutive(cfg, n_frames, fps)
