"""Frame preprocessing: resize and crop in the decode workers (uint8), normalise on the
device (float). Presets follow the recipes of REFERENCE.md section 4."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from aqa_pipeline.errors import AqaError

# (mean, std) applied to RGB in [0, 1]
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # MUSDL, DAE, CoRe, Swin
    "kinetics": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),  # pytorchvideo
    "minus1_1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # the I3D authors: [-1, 1]
}


def _pair(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise AqaError(f"preprocess.{name} must be one int or two, got {value!r}")
    return (int(value[0]), int(value[1]))


@dataclass(frozen=True)
class Preprocess:
    """Per-frame geometry, then normalisation.

    resize (W, H): exact resize (MUSDL: 455x256); or short_side S: keep the aspect ratio.
    crop (H, W): center crop. squash (H, W): resize after the crop (GDLT: 224x300 -> 224x224).
    """

    resize: tuple[int, int] | None = None
    short_side: int | None = None
    crop: tuple[int, int] | None = None
    squash: tuple[int, int] | None = None
    normalize: str = "imagenet"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Preprocess:
        unknown = set(cfg) - {"resize", "short_side", "crop", "squash", "normalize"}
        if unknown:
            raise AqaError(f"preprocess: unknown keys {sorted(unknown)}")
        norm = cfg.get("normalize", "imagenet")
        if norm not in NORMALIZATION:
            raise AqaError(f"preprocess.normalize must be one of {sorted(NORMALIZATION)}")
        if cfg.get("resize") is not None and cfg.get("short_side") is not None:
            raise AqaError("preprocess: give resize or short_side, not both")
        short = cfg.get("short_side")
        return cls(
            resize=_pair(cfg.get("resize"), "resize"),
            short_side=int(short) if short is not None else None,
            crop=_pair(cfg.get("crop"), "crop"),
            squash=_pair(cfg.get("squash"), "squash"),
            normalize=norm,
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> (H, W, 3) uint8."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.resize is not None:
            image = image.resize(self.resize, Image.BILINEAR)
        elif self.short_side is not None:
            w, h = image.size
            scale = self.short_side / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = image.resize(size, Image.BILINEAR)
        if self.crop is not None:
            ch, cw = self.crop
            w, h = image.size
            if ch > h or cw > w:
                raise ValueError(f"frame of {w}x{h} is smaller than the {cw}x{ch} crop")
            left, top = (w - cw) // 2, (h - ch) // 2
            image = image.crop((left, top, left + cw, top + ch))
        if self.squash is not None:
            sh, sw = self.squash
            image = image.resize((sw, sh), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def normalize_clips(
    clips: torch.Tensor, preset: str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) -> normalised float (B, 3, T, H, W), on clips' device."""
    mean, std = NORMALIZATION[preset]
    x = clips.to(dtype).permute(0, 4, 1, 2, 3)
    m = torch.tensor(mean, dtype=dtype, device=clips.device).view(1, 3, 1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=dtype, device=clips.device).view(1, 3, 1, 1, 1) * 255.0
    return (x - m) / s
