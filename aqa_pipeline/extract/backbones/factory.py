"""`build(name, weights=..., random_init=...)`: a registered backbone with its weights loaded,
hashed and identified (its `WeightsEntry`, the normalisation it expects), in eval mode."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from aqa_pipeline.config import did_you_mean
from aqa_pipeline.errors import AqaError

from .checkpoints import Checkpoint, hub_checkpoint_file, hub_hash_prefix, read_checkpoint
from .hf import read_snapshot
from .registry import (
    HUB_SOURCES,
    Backbone,
    BackboneSpec,
    _entry,
    arch_keys,
    get_spec,
    list_backbones,
)
from .weights import LAYOUT_NORMALISATION, match_weights


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
        would use for this model, looked up in $TORCH_HOME/hub/checkpoints (never downloaded);
        for backbones whose spec.weights_kind is "hf_snapshot", a local Hugging Face snapshot
        folder (config.json + model.safetensors, read offline; see hf.py).
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
    check_arch(name, arch)

    checkpoint = None
    if weights is not None and entry.spec.weights_kind == "hf_snapshot":
        checkpoint = read_snapshot(weights, name)  # checks the folder, then hashes it
    elif weights is not None:
        path, sha256_prefix = _resolve_weights(entry.spec, weights)
        if path.is_dir():
            folders = [b for b in list_backbones() if get_spec(b).weights_kind == "hf_snapshot"]
            raise AqaError(
                f"{path}: is a folder; backbone {name!r} loads a weights file "
                f"({', '.join(entry.spec.layouts)} layout). Hugging Face snapshot folders are "
                f"for the backbones {', '.join(folders)}"
            )
        checkpoint = read_checkpoint(path, allow_unsafe_pickle, sha256_prefix)
        checkpoint.require_layout(entry.spec.layouts, name)

    # Builders initialise their modules from the global RNG: seed a fork of it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = entry.builder(checkpoint, **arch)

    weights_entry = model.loaded_entry()  # a snapshot describes itself
    if weights_entry is None and isinstance(checkpoint, Checkpoint):
        weights_entry = match_weights(name, checkpoint)
    if weights_entry is not None:
        normalisation = weights_entry.normalisation
    elif checkpoint is not None:
        normalisation = LAYOUT_NORMALISATION[checkpoint.layout]
    else:
        normalisation = entry.spec.normalisation
    model.spec = replace(
        entry.spec,
        feature_dim=model.feature_dim,
        min_frames=model.min_frames or entry.spec.min_frames,
        min_size=model.min_size or entry.spec.min_size,
    )
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
        **model.weights_details(),
    }
    return model.eval()


def check_arch(name: str, arch: dict[str, Any]) -> None:
    """AqaError naming the architecture keywords backbone `name` does not take."""
    accepted = arch_keys(name)
    unknown = sorted(set(arch) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no architecture arguments"
        hint = did_you_mean(unknown[0], accepted)
        raise AqaError(
            f"backbone {name!r} does not take {', '.join(unknown)}{hint}; it takes: {takes}"
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
