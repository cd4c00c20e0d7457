"""The interface every head implements (plain nn.Modules; the training loop is separate).

A head maps cached features to a score in normalised target units (the dataset's score
divided by `label.scale`); the loop multiplies predictions back.

Input kinds (`Head.input_kind`):
- "video": x is (B, D), the per-video mean of the clip features.
- "clips": x is (B, T, D) clip sequences with mask (B, T) bool, True = real clip.
- "pairs": x is (B, M, 2D + 2): for each of M exemplars of the same action class,
  [query features (D), exemplar features (D), exemplar target (1, normalised units),
  exemplar difficulty (1; 1.0 when the labels have none)]. M = 1 in training.

`batch` (for `loss` and `predict`) holds tensors with B first: "target" (B,) normalised,
and where the labels have them "difficulty" (B,), "judges" (B, J) and "subscores" (B, K)
(both normalised like the target), "class_id" (B,), "mask" (B, T); plus "epoch" (int).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import ConfigDict
from torch import Tensor, nn

from aqa_pipeline.config import Section, parse


class HeadOptions(Section):
    """A head's options: the keys of the config's `head:` section besides `name`. Each head
    subclasses it as `Head.Options`, with typed fields, defaults and ranges."""

    model_config = ConfigDict(frozen=True)


class Head(nn.Module):
    """Base class of all heads.

    Class attributes:
        input_kind: "video" | "clips" | "pairs" (see the module docstring).
        batch_seeds: True when several seeds can train as one vmapped model: the head has
            no buffers and no data-dependent Python control flow in forward/loss/predict.
            Heads that leave it False are trained seed after seed in one process.
        requires: label fields the head needs in `batch` ("difficulty", "judges",
            "subscores", "class_id"); the loop checks the labels provide them.
        authors_layout: how the head's authors named and shaped its state (an
            `AuthorsLayout`, aqa_pipeline.train.heads.authors), for heads whose released
            checkpoints can be loaded; None otherwise.
        reports_sigma: True when `predict` returns a sigma (heads where it depends on
            the options override the `has_sigma` property instead).
    """

    Options: ClassVar[type[HeadOptions]] = HeadOptions
    input_kind: ClassVar[str] = "video"
    batch_seeds: ClassVar[bool] = False
    authors_layout: ClassVar[Any] = None
    reports_sigma: ClassVar[bool] = False
    requires: tuple[str, ...] = ()  # heads whose needs depend on options set it in __init__

    def __init__(self, options: HeadOptions | dict[str, Any] | None = None, **kw: Any):
        """Validate the options (see `options`) and keep them as `self.opts`."""
        super().__init__()
        self.opts = self.options(options, **kw)

    @classmethod
    def options(cls, options: HeadOptions | dict[str, Any] | None = None, **kw: Any) -> Any:
        """Validate options (an Options instance, a dict or keywords) as `cls.Options`;
        AqaError naming the key `head.<key>` otherwise."""
        if isinstance(options, cls.Options) and not kw:
            return options
        data = {**(options.model_dump() if isinstance(options, HeadOptions) else options or {})}
        data.update(kw)
        return parse(cls.Options, data, f"head {getattr(cls, 'head_name', cls.__name__)}",
                     prefix="head.")  # fmt: skip

    @property
    def has_sigma(self) -> bool:
        """Whether `predict` reports a sigma (what eval.calibrate_sigma calibrates)."""
        return self.reports_sigma

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        """Return at least "score" (B,); optionally "sigma" (B,), "clip_scores" (B, T),
        "clip_weights" (B, T) and whatever `loss` needs."""
        raise NotImplementedError

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError

    def loss_terms(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """The loss's named scalar terms, with "total" (= `loss`). Heads whose loss has
        several terms list them (e.g. gdlt: mse, triplet)."""
        return {"total": self.loss(out, batch)}

    def normal(self, name: str, shape: Sequence[int], std: float, like: Tensor) -> Tensor:
        """N(0, std^2) draws of `shape` in like's dtype and device. Every random tensor a
        head's forward or loss uses (dropout aside) is drawn here, under a `name` (interaqa:
        "query", "pred"; dae: "eps"), so a test can inject the authors' own draws
        (tests/test_head_parity.py replaces this method on the instance)."""
        draw = torch.randn(tuple(shape), dtype=like.dtype, device=like.device)
        return draw if std == 1 else draw * std

    def predict(self, out: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor | None]:
        """The reported prediction (normalised units): "score" (B,) and "sigma" (B,) or None."""
        return {"score": out["score"], "sigma": out.get("sigma")}
