"""Frozen video backbones: `build(name, weights=...)` -> module with forward_features (B, D).

Known weights files and the input they expect: `list_weights`, `match_weights` (weights.py).
To add a backbone: one module here with a `@register_backbone(BackboneSpec(...))` builder and
a `register_weights(WeightsEntry(...))` per known file (see i3d_r50.py), a recipe in
aqa_pipeline/configs/extract/ and a test; the module is imported by `import_all` below.
"""

from aqa_pipeline.plugins import import_all

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

# every module here is imported: builders register their backbones and weights entries
import_all(__name__, __path__)

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
