"""The backbone registry: specs, the `Backbone` base class and `build`.

Builders register themselves with `@register_backbone(spec)` (timm style). A builder takes the
loaded `Checkpoint` (or None for random init) plus architecture keyword arguments, and returns
a `Backbone` with the checkpoint's weights already in it; `build` does everything else (argument
checks, reading and hashing the file, seeding, provenance).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.normalisation import PRESETS

from .checkpoints import hub_checkpoint_file, hub_hash_prefix, read_checkpoint
from .weights import LAYOUT_NORMALISATION, WeightsEntry, match_weights

NORMALISATIONS = tuple(PRESETS)  # the preset names, see aqa_pipeline/extract/normalisation.py
HUB_SOURCES = ("torchvision", "pytorchvideo")


@dataclass(frozen=True)
class BackboneSpec:
    """What a caller needs to know about a backbone before running it.

    normalisation names the preprocessing preset (normalisation.PRESETS) the backbone's usual
    weights expect: "imagenet" (ImageNet mean/std on [0, 1]), "minus1_1" (RGB scaled to
    [-1, 1]) or "kinetics" (mean 0.45, std 0.225). A built model records the preset of the
    weights it actually holds in weights_info["normalisation"] (see weights.py).
    min_frames and min_size (pixels, for H and W) are the smallest clip the network accepts.
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

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation preset {self.normalisation!r}")

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
    weights_entry: WeightsEntry | None

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


def build(
    name: str,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    allow_unsafe_pickle: bool = False,
    **arch: Any,
) -> Backbone:
    """Build backbone `name` in eval mode, with weights from a file or seeded random weights.

    weights: a checkpoint file in one of the layouts the backbone loads (see
        `get_spec(name).layouts`), or "torchvision" / "pytorchvideo" for the file torch.hub
        would use for this model, looked up in $TORCH_HOME/hub/checkpoints (never downloaded).
    random_init: use random weights drawn from `seed` (same seed, same weights); the global
        RNG state is left untouched.
    allow_unsafe_pickle: load files that need full unpickling (can run code; trusted files only).
    arch: architecture keyword arguments of the builder (e.g. swin3d's embed_dim, i3d's numerics).

    The file is identified with `weights.match_weights`; weights_info["entry"] names the entry
    (None when the file is none of the known ones) and weights_info["normalisation"] is the
    preset the weights expect: the entry's, else the layout's, else (random init) the spec's.
    """
    entry = _entry(name)
    if weights is None and not random_init:
        raise AqaError(
            f"backbone {name!r} needs weights: pass a weights file (--weights) or --random-init"
        )
    if weights is not None and random_init:
        raise AqaError(f"backbone {name!r}: pass either a weights file or random_init, not both")
    _check_arch_kwargs(entry, arch)

    checkpoint = None
    if weights is not None:
        path, sha256_prefix = _resolve_weights(entry.spec, weights)
        checkpoint = read_checkpoint(path, allow_unsafe_pickle, sha256_prefix)
        checkpoint.require_layout(entry.spec.layouts, name)

    # Builders initialise their modules from the global RNG: seed a fork of it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.builder(checkpoint, **arch)

    weights_entry = match_weights(name, checkpoint) if checkpoint else None
    if weights_entry is not None:
        normalisation = weights_entry.normalisation
    elif checkpoint is not None:
        normalisation = LAYOUT_NORMALISATION[checkpoint.layout]
    else:
        normalisation = entry.spec.normalisation
    model.spec = replace(entry.spec, feature_dim=model.feature_dim)
    model.weights_entry = weights_entry
    model.weights_info = {
        "path": str(checkpoint.path) if checkpoint else None,
        "sha256": checkpoint.sha256 if checkpoint else None,
        "layout": checkpoint.layout if checkpoint else model.layout,
        "random_init": checkpoint is None,
        "seed": None if checkpoint else seed,
        "num_classes": model.num_classes,
        "entry": weights_entry.name if weights_entry else None,
        "normalisation": normalisation,
    }
    return model.eval()


def _check_arch_kwargs(entry: _Entry, arch: dict[str, Any]) -> None:
    params = inspect.signature(entry.builder).parameters
    accepted = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(arch) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no architecture arguments"
        raise AqaError(
            f"backbone {entry.spec.name!r} does not take {', '.join(unknown)}; it takes: {takes}"
        )


def _resolve_weights(spec: BackboneSpec, weights: str | Path) -> tuple[Path, str | None]:
    """The weights file to read, and the sha256 prefix its torch.hub name promises (if any)."""
    if isinstance(weights, str) and weights in HUB_SOURCES:
        if spec.hub_source != weights or spec.hub_url is None:
            other = f"; it can use weights={spec.hub_source!r}" if spec.hub_source else ""
            raise AqaError(f"backbone {spec.name!r} has no {weights} weights{other}")
        path = hub_checkpoint_file(spec.hub_url, weights)
        return path, hub_hash_prefix(path.name)
    return Path(weights), None
