"""Clip sampling recipes: which frames of a video make each clip (indices only).

Every recipe maps (number of frames, frame rate) to an int array (K clips, L frames) of
frame indices into the (trimmed) video; nothing is random. Recipes (configs/extract):

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
from typing import Any

import numpy as np

from aqa_pipeline.errors import AqaError


class TooShortError(ValueError):
    """The video has fewer frames than the recipe needs (recorded as that video's failure)."""


def _pad(indices: np.ndarray, n_frames: int, needed: int, cfg: Mapping[str, Any]) -> np.ndarray:
    if n_frames >= needed:
        return indices
    if cfg.get("pad", "none") == "repeat_last" and n_frames > 0:
        return np.minimum(indices, n_frames - 1)
    raise TooShortError(f"too short: the recipe needs {needed} frames, the video has {n_frames}")


def plan_starts(cfg: Mapping[str, Any], n_frames: int) -> np.ndarray:
    window = int(cfg["window"])
    clip_len = int(cfg["clip_len"])
    starts = [int(s) if int(s) >= 0 else window + int(s) for s in cfg["starts"]]
    if any(s < 0 or s + clip_len > window for s in starts):
        raise AqaError(f"sampling: starts {cfg['starts']} do not fit a window of {window}")
    offset = 0
    if cfg.get("anchor", "start") == "end" and n_frames > window:
        offset = n_frames - window
    clips = np.array([np.arange(s, s + clip_len) for s in starts], dtype=np.int64) + offset
    return _pad(clips, n_frames, window, cfg)


def plan_linspace(cfg: Mapping[str, Any], n_frames: int) -> np.ndarray:
    num = int(cfg["num_frames"])
    clip_len = int(cfg["clip_len"])
    if num % clip_len:
        raise AqaError(f"sampling: num_frames {num} is not a multiple of clip_len {clip_len}")
    if n_frames < num and cfg.get("pad", "none") != "repeat_last":
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


def plan_consecutive(cfg: Mapping[str, Any], n_frames: int, fps: float) -> np.ndarray:
    clip_len = int(cfg["clip_len"])
    stride = int(cfg.get("stride", clip_len))
    target = cfg.get("target_fps")
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
    head = (m - used) // 2 if cfg.get("trim", "even") == "even" else 0
    starts = head + stride * np.arange(n_clips)
    return frames[starts[:, None] + np.arange(clip_len)[None, :]]


def plan_clips(cfg: Mapping[str, Any], n_frames: int, fps: float = 0.0) -> np.ndarray:
    """(K, L) frame indices of a video with `n_frames` frames at `fps`, by recipe `cfg`."""
    method = cfg.get("method")
    if method == "starts":
        return plan_starts(cfg, n_frames)
    if method == "linspace":
        return plan_linspace(cfg, n_frames)
    if method == "consecutive":
        return plan_consecutive(cfg, n_frames, fps)
    raise AqaError(f"sampling.method must be starts, linspace or consecutive, got {method!r}")
