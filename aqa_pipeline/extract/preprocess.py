"""Frame preprocessing: resize and crop, then normalise. Presets follow the recipes of
REFERENCE.md section 4.

Three implementations of the same geometry (`Preprocess.geometry`), all bilinear with
antialiasing (a triangle filter widened by the downscale factor, as PIL does):

- `Preprocess.frame` (the default, in the decode workers): torch's uint8 CPU kernel on one
  (H, W, 3) frame, rounding after each resize as PIL does. Measured on real frames: at most
  1 grey level from the PIL path, about 0.5% of the values differ; 4-6x faster than PIL.
- `preprocess_clips` (`--preprocess-device`): native-size uint8 clips on any device, resized
  in float32 and rounded once at the end (the antialiased kernels of CUDA are float-only);
  also at most 1 grey level from the PIL path.
- `Preprocess.__call__`: the PIL reference (a PIL image in), used by tests to check the
  other two.

Which one produced a cache is recorded in its provenance (`RESIZE_IMPL`); the cache key does
not change with it (see README, "Decoding and preprocessing speed").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tnf
from PIL import Image
from pydantic import ConfigDict, PositiveInt, field_validator, model_validator

from aqa_pipeline.config import Section, parse
from aqa_pipeline.extract.normalisation import PRESETS

Pair = tuple[PositiveInt, PositiveInt]

# provenance names of the implementations (see the module docstring)
RESIZE_IMPL = {
    "workers": "torch-uint8-antialias",
    "device": "torch-float32-antialias-round",
    "pil": "pil-bilinear",
}


@dataclass(frozen=True)
class Geometry:
    """What happens to a frame of a given size, every size as (H, W): an optional resize,
    an optional crop (top, left, height, width), an optional squash; `out` is the result."""

    resize: tuple[int, int] | None
    crop: tuple[int, int, int, int] | None
    squash: tuple[int, int] | None
    out: tuple[int, int]


class Preprocess(Section):
    """The `preprocess:` section of a recipe: per-frame geometry, then normalisation.

    resize (W, H): exact resize (MUSDL: 455x256); or short_side S: keep the aspect ratio.
    crop (H, W): center crop. squash (H, W): resize after the crop (GDLT: 224x300 -> 224x224).
    One int means a square. normalize: a preset of normalisation.PRESETS; None (not given) takes the
    preset the backbone's weights expect (resolved by the runner before any frame is read).
    """

    model_config = ConfigDict(frozen=True)

    resize: Pair | None = None
    short_side: PositiveInt | None = None
    crop: Pair | None = None
    squash: Pair | None = None
    normalize: str | None = None

    @field_validator("normalize")
    @classmethod
    def _preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(
                f"preprocess.normalize: unknown preset {value!r}; choose from {', '.join(PRESETS)}"
            )
        return value

    @field_validator("resize", "crop", "squash", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_size(self) -> Preprocess:
        if self.resize is not None and self.short_side is not None:
            raise ValueError("preprocess: give resize or short_side, not both")
        return self

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Preprocess:
        """Validate a `preprocess:` mapping (AqaError naming the key)."""
        return parse(cls, cfg, "recipe", prefix="preprocess.")

    def key(self) -> dict[str, Any]:
        """The fields that change the numbers (for the cache key)."""
        return {k: v for k, v in self.plain().items() if v is not None}

    def geometry(self, height: int, width: int) -> Geometry:
        """The resize, crop and squash of a (height, width) frame; ValueError when the frame
        is smaller than the crop."""
        h, w = height, width
        resize = None
        if self.resize is not None:
            resize = (self.resize[1], self.resize[0])
        elif self.short_side is not None:
            scale = self.short_side / min(w, h)
            resize = (max(1, round(h * scale)), max(1, round(w * scale)))
        if resize is not None:
            h, w = resize
        crop = None
        if self.crop is not None:
            ch, cw = self.crop
            if ch > h or cw > w:
                raise ValueError(f"frame of {w}x{h} is smaller than the {cw}x{ch} crop")
            crop = ((h - ch) // 2, (w - cw) // 2, ch, cw)
            h, w = ch, cw
        squash = None
        if self.squash is not None:
            squash = (self.squash[0], self.squash[1])
            h, w = squash
        return Geometry(resize, crop, squash, (h, w))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The PIL reference path: an RGB PIL image -> (H, W, 3) uint8."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        g = self.geometry(image.size[1], image.size[0])
        if g.resize is not None:
            image = image.resize((g.resize[1], g.resize[0]), Image.BILINEAR)
        if g.crop is not None:
            top, left, ch, cw = g.crop
            image = image.crop((left, top, left + cw, top + ch))
        if g.squash is not None:
            image = image.resize((g.squash[1], g.squash[0]), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """The fast CPU path: (H, W, 3) uint8 -> (h, w, 3) uint8, with torch's uint8 kernels
        (one thread per decode worker; at most 1 grey level from the PIL path)."""
        g = self.geometry(frame.shape[0], frame.shape[1])
        if g.resize is None and g.crop is None and g.squash is None:
            return frame
        # one thread: a frame is too small to share, and idle OpenMP threads spinning beside
        # FFmpeg's decode threads slowed a decode-only run 3x (in the main process, which
        # keeps its threads for the backbone)
        threads = torch.get_num_threads()
        if threads > 1:
            torch.set_num_threads(1)
        try:
            x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0)
            if g.resize is not None:
                x = _resize_uint8(x, g.resize)
            if g.crop is not None:
                top, left, ch, cw = g.crop
                x = x[:, :, top : top + ch, left : left + cw]
            if g.squash is not None:
                x = _resize_uint8(x, g.squash)
            return x[0].permute(1, 2, 0).contiguous().numpy()
        finally:
            if threads > 1:
                torch.set_num_threads(threads)


def _channels_last_single(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> the same values, channels_last, with a batch stride that makes
    `interpolate` allocate a channels_last output too (for a batch of one, torch otherwise
    picks a contiguous output and the uint8 kernel repacks it)."""
    x = x.contiguous(memory_format=torch.channels_last)
    strides = list(x.stride())
    strides[0] = x.numel()
    return x.as_strided(x.shape, strides)


def _resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 3, H, W) uint8 -> (1, 3, h, w) uint8, bilinear with antialiasing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return tnf.interpolate(
        _channels_last_single(x), size=size, mode="bilinear", antialias=True, align_corners=False
    )


def preprocess_clips(clips: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """The device path: native-size uint8 clips (B, T, H, W, 3) on any device -> (B, T, h, w,
    3) uint8 on the same device. Resized in float32 (no rounding in between), rounded once at
    the end; one clip at a time, so the float copy stays one clip's size."""
    b, t, height, width, c = clips.shape
    g = preprocess.geometry(height, width)
    out = []
    for clip in clips:
        x = clip.permute(0, 3, 1, 2).float()  # (T, 3, H, W)
        if g.resize is not None and tuple(g.resize) != (height, width):
            x = tnf.interpolate(x, size=g.resize, mode="bilinear", antialias=True,
                                align_corners=False)  # fmt: skip
        if g.crop is not None:
            top, left, ch, cw = g.crop
            x = x[:, :, top : top + ch, left : left + cw]
        if g.squash is not None and tuple(g.squash) != tuple(x.shape[-2:]):
            x = tnf.interpolate(x, size=g.squash, mode="bilinear", antialias=True,
                                align_corners=False)  # fmt: skip
        out.append((x + 0.5).floor_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1))
    return torch.stack(out) if out else clips.new_zeros((0, t, *g.out, c))


def normalize_clips(
    clips: torch.Tensor, preset: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) -> normalised float (B, 3, T, H, W), on clips' device."""
    mean, std = PRESETS[preset]
    x = clips.to(dtype).permute(0, 4, 1, 2, 3)
    m = torch.tensor(mean, dtype=dtype, device=clips.device).view(1, 3, 1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=dtype, device=clips.device).view(1, 3, 1, 1, 1) * 255.0
    return (x - m) / s
