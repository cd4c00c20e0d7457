"""The cache key: the fields that change the numbers of a feature cache, built in one place
for extraction (`aqa extract`) and imports (`aqa features import`)."""

from __future__ import annotations

from typing import Any


def cache_key_fields(
    *,
    backbone: str,
    arch: dict[str, Any],
    feature_dim: int,
    weights: dict[str, Any],
    sampling: dict[str, Any],
    preprocess: dict[str, Any],
    dtype: str,
    compute_precision: str,
) -> dict[str, Any]:
    """Key fields of a cache; their hash (`aqa_pipeline.config.config_hash`) is its cache_key.

    weights: {"sha256", "random_init", and "seed" for random init or "name" for imports}.
    sampling / preprocess: the resolved recipe sections (only keys that are used).
    """
    return {
        "backbone": {"name": backbone, "arch": dict(arch)},
        "feature_dim": int(feature_dim),
        "weights": dict(weights),
        "sampling": dict(sampling),
        "preprocess": dict(preprocess),
        "dtype": dtype,
        "compute_precision": compute_precision,
    }
