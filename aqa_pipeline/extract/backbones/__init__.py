"""Frozen video backbones: `build(name, weights=...)` -> module with forward_features (B, D).

Known weights files and the input they expect: `list_weights`, `match_weights` (weights.py).
"""

from . import i3d as _i3d  # noqa: F401  (importing registers the backbones and their weights)
from . import i3d_r50 as _i3d_r50  # noqa: F401
from . import swin3d as _swin3d  # noqa: F401
from .checkpoints import Checkpoint, read_checkpoint, sha256_file
from .factory import build
from .registry import (
    Backbone,
    BackboneSpec,
    get_spec,
    list_backbones,
    register_backbone,
)
from .weights import (
    WeightsEntry,
    expected_normalisation,
    get_weights,
    list_weights,
    match_weights,
    register_weights,
    resolve_normalisation,
)

__all__ = [
    "Backbone",
    "BackboneSpec",
    "Checkpoint",
    "WeightsEntry",
    "build",
    "expected_normalisation",
    "get_spec",
    "get_weights",
    "list_backbones",
    "list_weights",
    "match_weights",
    "read_checkpoint",
    "register_backbone",
    "register_weights",
    "resolve_normalisation",
    "sha256_file",
]
