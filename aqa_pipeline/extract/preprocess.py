"""Frame preprocessing: resize and crop in the decode workers (uint8), normalise on the
device (float). Presets follow the recipes of REFERENCE.md section 4."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import ConfigDict, PositiveInt, field_validator, model_validator

from aqa_pipeline.config import Section, parse
from aqa_pipeline.extract.normalisation import PRESETS

Pair = tuple[PositiveInt, PositiveInt]


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

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> (H, W, 3) uint8."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.resize is not None:
            image = image.resize(tuple(self.resize), Image.BILINEAR)
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
    mean, std = PRESETS[preset]
    x = clips.to(dtype).permute(0, 4, 1, 2, 3)
    m = torch.tensor(mean, dtype=dtype, device=clips.device).view(1, 3, 1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=dtype, device=clips.device).view(1, 3, 1, 1, 1) * 255.0
    return (x - m) / s
