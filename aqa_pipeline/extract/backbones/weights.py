"""Known weights files: what each one is, where it comes from and what input it expects.

In the manner of torchvision's `Weights` enums and timm's pretrained cfgs, every weights file
AQA users hold has a `WeightsEntry`: its backbone and checkpoint layout, its classifier (classes
and their names), the normalisation preset and smallest clip it expects, its source and licence.
Entries are registered beside their builders (i3d.py, i3d_r50.py, swin3d.py) with
`register_weights`; `build` identifies the file it loads with `match_weights` and records the
entry, so that `resolve_normalisation` can tell a recipe which preset the weights expect.

sha256 is set only where a source publishes it (torchvision publishes the first 8 hex digits in
its file names: `sha256_prefix`); no other source publishes a hash.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from torchvision.models._meta import _KINETICS400_CATEGORIES

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.normalisation import PRESETS, check_preset

from .checkpoints import LAYOUTS, Checkpoint
from .registry import get_spec

# The Kinetics-400 class names in index order (alphabetical; identical to DeepMind's
# kinetics-i3d label_map.txt, which hassony2/kinetics_i3d_pytorch copies).
KINETICS400_CATEGORIES: tuple[str, ...] = tuple(_KINETICS400_CATEGORIES)

# The preset a checkpoint expects when no entry matches it, by layout (what its entries say).
LAYOUT_NORMALISATION: dict[str, str] = {
    "piergiaj": "minus1_1",  # DeepMind's I3D: RGB in [-1, 1]
    "gsteg157": "minus1_1",  # the same trunk; GSTEG and piergiaj's Charades training use [-1, 1]
    "hassony2": "minus1_1",  # DeepMind's I3D converted from TensorFlow
    "pytorchvideo": "kinetics",
    "torchvision": "imagenet",
    "mmaction": "imagenet",
}

_HEX = re.compile(r"[0-9a-f]+")
# Hugging Face snapshot folders (hf.py): each describes itself with an entry made when it is
# loaded (its preprocessor config, its sha256); those entries are not registered.
SNAPSHOT_LAYOUT = "huggingface"


@dataclass(frozen=True)
class WeightsEntry:
    """One published weights file.

    name: short id ("i3d_piergiaj_rgb_imagenet"). backbone: the registered backbone that loads
    the file as it is, with no arguments. file_name: the file as published. layout: its
    checkpoint layout (checkpoints.LAYOUTS). num_classes: rows of its classifier (0: none);
    categories: their names in index order, where known. normalisation: the preset the weights
    expect (normalisation.PRESETS). min_frames, min_size: the smallest clip (frames, pixels of
    H and W) the network accepts. arch: the architecture settings, as the built model's `arch`
    records them (for Video Swin these are the keyword arguments of the generic "swin3d"
    backbone). sha256 / sha256_prefix: only where published. source: repository and path (or
    URL) as text; url: direct download link, where there is one. dataset: what it was trained on.
    """

    name: str
    backbone: str
    file_name: str
    layout: str
    num_classes: int
    normalisation: str
    min_frames: int
    min_size: int
    source: str
    dataset: str
    licence: str = "not stated"
    url: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    categories: tuple[str, ...] | None = field(default=None, repr=False)
    arch: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        where = f"weights entry {self.name!r}"
        if not re.fullmatch(r"[a-z0-9_]+", self.name):
            raise ValueError(f"{where}: name must be lowercase letters, digits and _")
        if self.layout not in (*LAYOUTS, SNAPSHOT_LAYOUT):
            raise ValueError(f"{where}: unknown layout {self.layout!r}")
        if self.normalisation not in PRESETS:
            raise ValueError(f"{where}: unknown normalisation preset {self.normalisation!r}")
        if self.sha256 is not None and not (len(self.sha256) == 64 and _HEX.fullmatch(self.sha256)):
            raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits")
        if self.sha256_prefix is not None:
            if not (8 <= len(self.sha256_prefix) < 64 and _HEX.fullmatch(self.sha256_prefix)):
                raise ValueError(f"{where}: sha256_prefix must be 8-63 lowercase hex digits")
            if self.sha256 is not None and not self.sha256.startswith(self.sha256_prefix):
                raise ValueError(f"{where}: sha256 does not start with sha256_prefix")
        if self.categories is not None and len(self.categories) != self.num_classes:
            raise ValueError(
                f"{where}: {len(self.categories)} categories for {self.num_classes} classes"
            )
        if self.num_classes < 0 or self.min_frames < 1 or self.min_size < 1:
            raise ValueError(f"{where}: num_classes, min_frames and min_size must be positive")
        object.__setattr__(self, "arch", MappingProxyType(dict(self.arch)))

    def summary(self) -> str:
        """One line for `aqa list weights`: name, backbone, file, normalisation, classes."""
        return (
            f"{self.name:<29} {self.backbone:<8} {self.file_name:<48} {self.normalisation:<8} "
            f"{self.num_classes:>3} classes: {self.dataset}"
        )


_WEIGHTS: dict[str, WeightsEntry] = {}


def register_weights(entry: WeightsEntry) -> WeightsEntry:
    """Add `entry` to the registry (names are unique) and return it."""
    if entry.name in _WEIGHTS:
        raise ValueError(f"weights entry {entry.name!r} is already registered")
    _WEIGHTS[entry.name] = entry
    return entry


def list_weights(backbone: str | None = None) -> list[WeightsEntry]:
    """All entries, or those of `backbone` (a registered backbone name), sorted by name."""
    if backbone is not None:
        get_spec(backbone)  # AqaError naming the known backbones
    return sorted(
        (e for e in _WEIGHTS.values() if backbone is None or e.backbone == backbone),
        key=lambda e: e.name,
    )


def get_weights(name: str) -> WeightsEntry:
    """The entry called `name`."""
    if name not in _WEIGHTS:
        raise AqaError(f"unknown weights entry {name!r}; known: {', '.join(sorted(_WEIGHTS))}")
    return _WEIGHTS[name]


def match_weights(backbone_name: str, checkpoint: Checkpoint) -> WeightsEntry | None:
    """The entry a loaded checkpoint is, or None.

    Tried in order: the published sha256; the published sha256 prefix; the file name; then,
    among the entries of `backbone_name`, the (layout, num_classes) pair when exactly one entry
    has it. Name and shape matches need the layout and the classifier size to agree, and never
    pick an entry whose published hash the file does not have (a fine-tuned copy is not the
    published file).
    """
    sha256 = checkpoint.sha256
    entries = [e for e in _WEIGHTS.values() if e.layout == checkpoint.layout]
    for entry in entries:
        if entry.sha256 == sha256:
            return entry
    for entry in entries:
        if entry.sha256_prefix and sha256.startswith(entry.sha256_prefix):
            return entry

    num_classes = checkpoint.num_classes
    fits = [
        e
        for e in entries
        if e.num_classes == num_classes and e.sha256 is None and e.sha256_prefix is None
    ]
    by_name = [e for e in fits if e.file_name == checkpoint.file_name]
    if len(by_name) == 1:
        return by_name[0]
    of_backbone = [e for e in fits if e.backbone == backbone_name]
    return of_backbone[0] if len(of_backbone) == 1 else None


def expected_normalisation(model: Any) -> str:
    """The preset a built backbone's weights expect: its entry's, else its layout's, else (random
    init) its spec's. Models not made by `build` fall back to their spec."""
    info = getattr(model, "weights_info", None) or {}
    preset = info.get("normalisation")
    if preset is None:
        spec = getattr(model, "spec", None)
        if spec is None:
            raise AqaError(
                f"{type(model).__name__}: no weights_info or spec; build backbones with build()"
            )
        preset = spec.normalisation
    return preset


def resolve_normalisation(model: Any, requested: str | None) -> tuple[str, str | None]:
    """The preset to apply to a built backbone's input, and a warning when it is not the one
    the weights expect.

    requested is the recipe's `preprocess.normalize`: None takes the weights' preset; the
    weights' own preset gives no warning; any other preset is applied, with a one-line warning
    naming both presets and the weights (the caller logs it and keeps it in the provenance).
    Random-init weights expect nothing: a named preset is applied without a warning.
    """
    expected = expected_normalisation(model)
    if requested is None or requested == expected:
        return expected, None
    check_preset(requested, "preprocess.normalize")
    if (getattr(model, "weights_info", None) or {}).get("random_init"):
        return requested, None  # random weights expect nothing: no override to report
    return requested, (
        f"preprocess.normalize {requested!r} overrides the {expected!r} normalisation that "
        f"these weights ({describe_weights(model)}) expect"
    )


def describe_weights(model: Any) -> str:
    """A few words naming a built backbone's weights: entry and file, file and layout, or seed."""
    info = getattr(model, "weights_info", None) or {}
    entry = info.get("entry")
    path = info.get("path")
    if info.get("random_init"):
        return f"random init, seed {info.get('seed')}"
    file = Path(path).name if path else "unknown file"
    return f"{entry}, {file}" if entry else f"{file}, {info.get('layout')} layout"
