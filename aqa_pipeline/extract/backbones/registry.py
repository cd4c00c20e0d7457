"""The backbone registry: specs, the `Backbone` base class and `build`.

Builders register themselves with `@register_backbone(spec)` (timm style). A builder takes the
loaded `Checkpoint` (or None for random init) plus architecture keyword arguments, and returns
a `Backbone` with the checkpoint's weights already in it; `build` does everything else (argument
checks, reading and hashing the file, seeding, provenance).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.normalisation import PRESETS

NORMALISATIONS = tuple(PRESETS)  # the preset names, see aqa_pipeline/extract/normalisation.py
HUB_SOURCES = ("torchvision", "pytorchvideo")
WEIGHTS_KINDS = ("file", "hf_snapshot")


@dataclass(frozen=True)
class BackboneSpec:
    """What a caller needs to know about a backbone before running it.

    normalisation names the preprocessing preset (normalisation.PRESETS) the backbone's usual
    weights expect: "imagenet" (ImageNet mean/std on [0, 1]), "minus1_1" (RGB scaled to
    [-1, 1]) or "kinetics" (mean 0.45, std 0.225). A built model records the preset of the
    weights it actually holds in weights_info["normalisation"] (see weights.py).
    min_frames and min_size (pixels, for H and W) are the smallest clip the network accepts.
    weights_kind says what `--weights` names: "file" (a checkpoint file, checkpoints.py) or
    "hf_snapshot" (a local Hugging Face snapshot folder, hf.py).
    """

    name: str
    feature_dim: int | None  # None when it depends on architecture kwargs (swin3d)
    normalisation: str
    min_frames: int
    description: str
    min_size: int = 1
    layouts: tuple[str, ...] = ()  # checkpoint layouts it loads, see checkpoints.py
    hub_source: str | None = None  # weights="torchvision" / "pytorchvideo" is allowed
    hub_url: str | None = None  # ...and means the file torch.hub would keep for this URL
    weights_kind: str = "file"

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation preset {self.normalisation!r}")
        if self.weights_kind not in WEIGHTS_KINDS:
            raise ValueError(f"unknown weights_kind {self.weights_kind!r}")

    @property
    def normalization(self) -> str:
        """Alias of `normalisation`."""
        return self.normalisation


class Backbone(nn.Module):
    """A frozen video backbone: `forward_features(x)` maps clips (B, 3, T, H, W) to (B, D).

    Attributes set by the subclass: feature_dim (D), num_classes (of the classifier that came
    with the weights; 0 when there is none), layout (its native key layout and numerics) and
    arch (its architecture settings, JSON-friendly). `build` adds spec, weights_info (a
    JSON-friendly dict: path, sha256, layout, random_init, seed, num_classes, entry and
    normalisation) and weights_entry (the matched `WeightsEntry`, or None).
    """

    feature_dim: int
    num_classes: int = 0
    layout: str = ""
    arch: dict[str, Any]
    spec: BackboneSpec
    weights_info: dict[str, Any]
    weights_entry: Any  # its weights.WeightsEntry, or None when no entry matches
    # set by builders whose smallest clip depends on the weights (hf.py); None: the spec's
    min_frames: int | None = None
    min_size: int | None = None

    def weights_details(self) -> dict[str, Any]:
        """Backbone-specific facts `build` adds to weights_info (JSON-friendly); none here."""
        return {}

    def loaded_entry(self) -> Any:
        """The WeightsEntry of weights that describe themselves (a Hugging Face snapshot);
        None here: `build` identifies a checkpoint file with `match_weights`."""
        return None

    def check_input(self, frames: int, size: tuple[int, int]) -> None:
        """AqaError unless clips of `frames` frames of size (H, W) fit this network; the
        runner calls it before decoding anything when the recipe fixes the clip size."""
        spec = getattr(self, "spec", None)
        check_clip(torch.empty((1, 3, frames, *size), device="meta"), type(self).__name__,
                   getattr(spec, "min_frames", 1), getattr(spec, "min_size", 1))  # fmt: skip

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) normalised float clips -> (B, feature_dim) pooled features."""
        raise NotImplementedError

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes) class scores of the checkpoint's own classifier."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def _require_classifier(self) -> None:
        if self.num_classes == 0:
            raise AqaError(f"{type(self).__name__}: these weights have no classifier head")


def check_clip(x: torch.Tensor, backbone: str, min_frames: int = 1, min_size: int = 1) -> None:
    """Raise AqaError unless x is a batch of RGB clips (B, 3, T, H, W) with T >= min_frames and
    H, W >= min_size."""
    if x.ndim != 5 or x.shape[1] != 3:
        raise AqaError(f"{backbone}: expected clips shaped (B, 3, T, H, W), got {tuple(x.shape)}")
    t, h, w = x.shape[2:]
    if t < min_frames or min(h, w) < min_size:
        raise AqaError(
            f"{backbone}: {t}x{h}x{w} (T x H x W) clips are too small; it needs at least "
            f"{min_frames} frames of {min_size}x{min_size} pixels"
        )


Builder = Callable[..., Backbone]


@dataclass(frozen=True)
class _Entry:
    spec: BackboneSpec
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[Builder], Builder]:
    """Decorator registering `builder(checkpoint, **arch) -> Backbone` under spec.name."""

    def decorator(builder: Builder) -> Builder:
        if spec.name in _REGISTRY:
            raise ValueError(f"backbone {spec.name!r} is already registered")
        _REGISTRY[spec.name] = _Entry(spec, builder)
        return builder

    return decorator


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The registered spec of backbone `name`."""
    return _entry(name).spec


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise AqaError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def arch_keys(name: str) -> list[str]:
    """The architecture keywords backbone `name` takes (its builder's keyword-only arguments)."""
    params = inspect.signature(_entry(name).builder).parameters
    return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
