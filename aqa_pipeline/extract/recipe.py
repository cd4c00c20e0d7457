"""The extraction recipe: one typed config, parsed once before any work starts.

    name: a label (recorded in the cache's provenance)
    backbone: {name, arch: {...}, seed}   which network; arch: its architecture keywords
    sampling: {...}                        which frames make each clip (see sampling.py)
    preprocess: {...}                      frame geometry and normalisation (see preprocess.py)
    extract: {batch_size, workers}         runtime defaults (the command line overrides them)

Shipped recipes are package data (aqa_pipeline/configs/extract); `load_recipe(name_or_path,
overrides)` finds, reads and validates one, naming any unknown key or bad value.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    field_validator,
    model_validator,
)

from aqa_pipeline.config import Section, did_you_mean, load_config, parse
from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.preprocess import Preprocess
from aqa_pipeline.extract.sampling import Sampling


class BackboneConfig(Section):
    """backbone: the registered name, its architecture keywords, the random-init seed."""

    model_config = ConfigDict(frozen=True)

    name: str
    arch: dict[str, Any] = Field(default_factory=dict)
    seed: NonNegativeInt = 0

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from aqa_pipeline.extract.backbones import list_backbones

        known = list_backbones()
        if name not in known:
            raise ValueError(
                f"backbone.name: unknown backbone {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}"
            )
        return name

    @model_validator(mode="after")
    def _arch_keys(self) -> BackboneConfig:
        from aqa_pipeline.extract.backbones.factory import check_arch

        try:
            check_arch(self.name, self.arch)
        except AqaError as exc:
            raise ValueError(f"backbone.arch: {exc.format_message()}") from None
        return self


class Runtime(Section):
    """extract: defaults for how the work runs (not part of the cache key)."""

    batch_size: PositiveInt = 8
    workers: NonNegativeInt = 2


class Recipe(Section):
    """A whole extraction recipe (see the module docstring)."""

    name: str | None = None
    backbone: BackboneConfig
    sampling: Sampling
    preprocess: Preprocess = Field(default_factory=Preprocess)
    extract: Runtime = Field(default_factory=Runtime)


def load_recipe(
    name: str | Path, overrides: Iterable[str] = (), backbone: str | None = None
) -> Recipe:
    """Read recipe `name` (a path or a shipped name), apply `--set` overrides and an optional
    backbone override, and validate it (AqaError, exit 1, naming the key)."""
    data = load_config(name, overrides, kind="extract")
    if backbone:
        data["backbone"] = {**(data.get("backbone") or {}), "name": backbone}
    return parse(Recipe, data, f"recipe {name}")
