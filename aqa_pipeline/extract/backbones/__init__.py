"""Frozen video backbones: `build(name, weights=...)` -> module with forward_features (B, D)."""

from . import i3d as _i3d  # noqa: F401  (importing registers the backbones)
from . import i3d_r50 as _i3d_r50  # noqa: F401
from . import swin3d as _swin3d  # noqa: F401
from .checkpoints import Checkpoint, read_checkpoint, sha256_file
from .registry import (
    Backbone,
    BackboneSpec,
    build,
    get_spec,
    list_backbones,
    register_backbone,
)

__all__ = [
    "Backbone",
    "BackboneSpec",
    "Checkpoint",
    "build",
    "get_spec",
    "list_backbones",
    "read_checkpoint",
    "register_backbone",
    "sha256_file",
]
