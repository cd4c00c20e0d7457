"""Train configs: defaults, validation and resolution (seeds, label scale).

Keys (every one optional except head.name; see configs/train/*.yaml):

    name: a label for the run
    labels: default labels spec (the --labels option overrides it)
    features.require: key fields the cache must have (subset match, else exit 3), e.g.
        {backbone: {name: i3d}}
    head: {name: dae, ...}: the head and its options (see `aqa_pipeline.train.heads`)
    label.scale: targets are divided by it for training, predictions multiplied back;
        a number or "auto" (the largest |score| in the training rows)
    data.clip_num, data.train_crop (random|none), data.test_crop (full|crop): clip heads
    data.exemplars: exemplars per test video for the contrastive heads (core, dae_core)
    data.standardize: z-score the features with the fold's training rows' mean and std
    optim.name (adam|adamw|sgd), optim.lr, optim.weight_decay, optim.momentum
    schedule.name (none|step|cosine), schedule.step_size, schedule.gamma,
        schedule.per (epoch|iteration), schedule.eta_min_ratio (cosine ends at lr * ratio)
    train.epochs, train.batch_size, train.amp (none|bf16), train.seed (first seed),
        train.seeds (a count or a list), train.threads (torch threads; null = leave as is),
        train.checkpoint_minutes (how often a run saves its state for `aqa train --resume`;
        also saved at the end of every run; 0 = after every epoch)
    eval.val_fraction: share of train held out (per seed, seeded) to pick the epoch for the
        `val` protocol; 0 disables it. eval.bootstrap: resamples for the 95% interval.
    eval.calibrate_sigma: for heads with sigma, scale each seed's sigma by the factor that
        makes its validation errors unit-variance (needs eval.val_fraction > 0); the
        factors are in metrics.json under sigma_scale, raw sigma = sigma / factor
    test.batch_size
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from aqa_pipeline.errors import AqaError

DEFAULTS: dict[str, Any] = {
    "name": None,
    "labels": None,
    "features": {"require": {}},
    "head": {"name": None},
    "label": {"scale": 1.0},
    "data": {
        "clip_num": None,
        "train_crop": "random",
        "test_crop": "full",
        "exemplars": 10,
        "standardize": False,
    },
    "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0, "momentum": 0.9},
    "schedule": {
        "name": "none",
        "step_size": 30,
        "gamma": 0.1,
        "per": "epoch",
        "eta_min_ratio": 0.0,
    },
    "train": {
        "epochs": 100,
        "batch_size": 8,
        "amp": "none",
        "seed": 0,
        "seeds": 1,
        "threads": None,
        "checkpoint_minutes": 5.0,
    },
    "eval": {"val_fraction": 0.2, "bootstrap": 1000, "calibrate_sigma": False},
    "test": {"batch_size": 64},
}
# sections whose keys are free-form (checked elsewhere)
_OPEN = {"head", "features"}
CHOICES = {
    ("data", "train_crop"): ("random", "none"),
    ("data", "test_crop"): ("full", "crop"),
    ("optim", "name"): ("adam", "adamw", "sgd"),
    ("schedule", "name"): ("none", "step", "cosine"),
    ("schedule", "per"): ("epoch", "iteration"),
    ("train", "amp"): ("none", "bf16"),
}


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: values of `over` win; nested dicts merge."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def seed_list(seeds: int | Sequence[int] | None, first: int = 0) -> list[int]:
    """A count N -> [first, ..., first + N - 1]; a list is kept."""
    if seeds is None:
        return [int(first)]
    if isinstance(seeds, int | float) and not isinstance(seeds, bool):
        if int(seeds) < 1:
            raise AqaError(f"seeds must be >= 1, got {seeds}")
        return [int(first) + i for i in range(int(seeds))]
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise AqaError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    return out


def resolve_config(
    config: Mapping[str, Any], seeds: int | Sequence[int] | None = None
) -> dict[str, Any]:
    """Defaults + `config`, checked; `seeds` (if given) replaces train.seeds."""
    unknown_top = sorted(set(config) - set(DEFAULTS))
    if unknown_top:
        raise AqaError(f"config: unknown section(s) {unknown_top}; known: {sorted(DEFAULTS)}")
    cfg = merge(DEFAULTS, config)
    for section, defaults in DEFAULTS.items():
        if not isinstance(defaults, dict) or section in _OPEN:
            continue
        if not isinstance(cfg[section], dict):
            raise AqaError(f"config: {section} must be a mapping")
        unknown = sorted(set(cfg[section]) - set(defaults))
        if unknown:
            raise AqaError(f"config: unknown key(s) {section}.{unknown}; known: {sorted(defaults)}")
    for (section, key), choices in CHOICES.items():
        if cfg[section][key] not in choices:
            raise AqaError(
                f"config: {section}.{key} must be one of {choices}, got {cfg[section][key]!r}"
            )
    if not cfg["head"].get("name"):
        raise AqaError("config: head.name is required (e.g. dae, mlp, dae_mt)")
    if seeds is not None:
        cfg["train"]["seeds"] = seeds
    cfg["train"]["seeds"] = seed_list(cfg["train"]["seeds"], cfg["train"]["seed"])
    for key in ("epochs", "batch_size"):
        if int(cfg["train"][key]) < 1:
            raise AqaError(f"config: train.{key} must be >= 1")
    if not 0 <= float(cfg["eval"]["val_fraction"]) < 1:
        raise AqaError("config: eval.val_fraction must be in [0, 1)")
    if cfg["eval"]["calibrate_sigma"] and not float(cfg["eval"]["val_fraction"]) > 0:
        raise AqaError(
            "config: eval.calibrate_sigma needs a validation split (eval.val_fraction > 0)"
        )
    scale = cfg["label"]["scale"]
    if scale != "auto" and not (isinstance(scale, int | float) and scale > 0):
        raise AqaError(f"config: label.scale must be a positive number or auto, got {scale!r}")
    return cfg
