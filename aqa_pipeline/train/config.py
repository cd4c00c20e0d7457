"""The train config: one typed model (`TrainConfig`), parsed once from YAML plus `--set`.

Keys (every one optional except head.name; see aqa_pipeline/configs/train/*.yaml):

    name: a label for the run
    labels: default labels spec (the --labels option overrides it)
    features.require: key fields the cache must have (subset match, else exit 3), e.g.
        {backbone: {name: i3d}}
    head: {name: dae, ...}: the head and its options, validated by the head's `Options`
    label.scale: targets are divided by it for training, predictions multiplied back;
        a number or "auto" (the largest |score| in the training rows)
    data.clip_num, data.train_crop (random|none), data.test_crop (full|crop): clip heads
    data.crop_starts: where a random crop may start in a video of T clips: "all" (default:
        0..T - clip_num, each equally likely) or "authors" (0..T - clip_num - 1: GDLT's and
        InterAQA's np.random.randint(0, T - clip_num) never draws the last start)
    data.exemplars: exemplars per test video for the contrastive heads (core, dae_core)
    data.standardize: z-score the features with the fold's training rows' mean and std
    optim.name (adam|adamw|sgd), optim.lr, optim.weight_decay, optim.momentum
    schedule.name (none|step|cosine), schedule.step_size, schedule.gamma,
        schedule.per (epoch|iteration), schedule.eta_min_ratio (cosine ends at lr * ratio)
    train.epochs, train.batch_size, train.amp (none|bf16), train.seed (first seed),
        train.seeds (a count or a list), train.threads (torch threads; null = leave as is),
        train.checkpoint_minutes (how often a run saves its state for `aqa train --resume`;
        also saved at the end of every run; 0 = after every epoch),
        train.init_from (a head checkpoint released by the head's authors, e.g. GDLT's
        .pkl: every seed starts from its weights instead of a seeded initialisation;
        `aqa train --init-from FILE`; its sha256 is recorded in environment.json)
    eval.val_fraction: share of train held out (per seed, seeded) to pick the epoch for the
        `val` protocol; 0 disables it. eval.bootstrap: resamples for the 95% interval.
    eval.calibrate_sigma: for heads with sigma, scale each seed's sigma by the factor that
        makes its validation errors unit-variance, fitted per protocol at the epoch that
        protocol reports (the last one for final); the factors are in metrics.json under
        sigma_scale (fold -> protocol -> seed), raw sigma = sigma / factor. "auto" (the default): whenever the head has
        a sigma and a validation split exists (eval.val_fraction > 0); true: required (needs
        the validation split); false: raw sigma
    eval.baseline: "ridge" (default) fits ridge regression on the per-video mean features of
        each fold's training rows (lambda by eval.baseline_folds-fold CV on them only) and
        reports it beside the head with the paired difference; "none" turns it off
    test.batch_size
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from aqa_pipeline.config import Section, load_config, parse
from aqa_pipeline.errors import AqaError


class FeaturesSection(Section):
    require: dict[str, Any] = Field(default_factory=dict)
    path: str | None = None  # the cache the run used (set by the runner)


class LabelSection(Section):
    scale: PositiveFloat | Literal["auto"] = 1.0


class DataSection(Section):
    clip_num: PositiveInt | None = None
    train_crop: Literal["random", "none"] = "random"
    test_crop: Literal["full", "crop"] = "full"
    crop_starts: Literal["all", "authors"] = "all"
    exemplars: PositiveInt = 10
    standardize: bool = False


class OptimSection(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 0.0
    momentum: float = Field(0.9, ge=0, lt=1)


class ScheduleSection(Section):
    name: Literal["none", "step", "cosine"] = "none"
    step_size: PositiveInt = 30
    gamma: PositiveFloat = 0.1
    per: Literal["epoch", "iteration"] = "epoch"
    eta_min_ratio: float = Field(0.0, ge=0, le=1)


class TrainSection(Section):
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 8
    amp: Literal["none", "bf16"] = "none"
    seed: NonNegativeInt = 0
    # a count N (seed .. seed + N - 1) or a list; always resolved to the list
    seeds: list[int] | PositiveInt = Field(1, validate_default=True)
    threads: PositiveInt | None = None
    checkpoint_minutes: NonNegativeFloat = 5.0
    init_from: str | None = None

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, seeds: int | list[int], info: ValidationInfo) -> list[int]:
        return seed_list(seeds, info.data.get("seed", 0))


class EvalSection(Section):
    val_fraction: float = Field(0.2, ge=0, lt=1)
    bootstrap: NonNegativeInt = 1000
    calibrate_sigma: bool | Literal["auto"] = "auto"
    baseline: Literal["ridge", "none"] = "ridge"
    baseline_folds: int = Field(5, ge=2)


class TestSection(Section):
    batch_size: PositiveInt = 64


class TrainConfig(Section):
    """A whole train config (see the module docstring); `head` holds the name and the
    head's options resolved with their defaults."""

    name: str | None = None
    labels: str | None = None
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    head: dict[str, Any]
    label: LabelSection = Field(default_factory=LabelSection)
    data: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    test: TestSection = Field(default_factory=TestSection)

    @field_validator("head")
    @classmethod
    def _head(cls, head: dict[str, Any]) -> dict[str, Any]:
        from aqa_pipeline.train.heads import head_options

        name = head.get("name")
        if not name:
            raise ValueError("head.name is required (e.g. dae, mlp, dae_mt)")
        options = head_options(str(name), {k: v for k, v in head.items() if k != "name"})
        return {"name": name, **options.plain()}

    @model_validator(mode="after")
    def _calibration_needs_val(self) -> TrainConfig:
        if self.eval.calibrate_sigma is True and not self.eval.val_fraction > 0:
            raise ValueError(
                "eval.calibrate_sigma needs a validation split (eval.val_fraction > 0)"
            )
        return self

    @property
    def head_name(self) -> str:
        return str(self.head["name"])

    def head_options(self) -> dict[str, Any]:
        """The head's options without its name."""
        return {k: v for k, v in self.head.items() if k != "name"}


def seed_list(seeds: int | Sequence[int] | None, first: int = 0) -> list[int]:
    """A count N -> [first, ..., first + N - 1]; a list is kept. The one meaning of seeds,
    in single runs and sweeps alike."""
    if seeds is None:
        return [int(first)]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return [int(first) + i for i in range(seeds)]
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    return out


def resolve_config(
    config: Mapping[str, Any] | TrainConfig,
    seeds: int | Sequence[int] | None = None,
    where: str = "train config",
) -> TrainConfig:
    """Validate `config` (defaults filled in); `seeds` (if given) replaces train.seeds. Every
    problem is one AqaError naming the key."""
    if isinstance(config, TrainConfig):
        config = config.plain()
    data = dict(config)
    if seeds is not None:
        data["train"] = {**(data.get("train") or {}), "seeds": seeds}
    return parse(TrainConfig, data, where)


def load_train_config(
    name: str | Path, overrides: Iterable[str] = (), seeds: int | Sequence[int] | None = None
) -> TrainConfig:
    """Read train config `name` (a path or a shipped name), apply `--set` overrides and
    validate it."""
    return resolve_config(load_config(name, overrides, kind="train"), seeds, f"config {name}")


__all__ = ["AqaError", "TrainConfig", "load_train_config", "resolve_config", "seed_list"]
