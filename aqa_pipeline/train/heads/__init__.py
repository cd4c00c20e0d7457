"""Head registry: `register_head(name)`, `build_head(name, in_dim, **cfg)`, `list_heads()`.

Heads: mlp, dae, dae_mt, usdl, musdl, core, dae_core (this package) and, when present,
interaqa and gdlt (long-form heads on clip sequences).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aqa_pipeline.config import did_you_mean
from aqa_pipeline.errors import AqaError
from aqa_pipeline.train.heads.base import Head, HeadOptions

_HEADS: dict[str, type[Head]] = {}


def register_head(name: str) -> Callable[[type[Head]], type[Head]]:
    """Class decorator: make a Head subclass buildable by `name`."""

    def decorate(cls: type[Head]) -> type[Head]:
        if name in _HEADS and _HEADS[name] is not cls:
            raise AqaError(f"head {name!r} is registered twice ({_HEADS[name]} and {cls})")
        _HEADS[name] = cls
        cls.head_name = name
        return cls

    return decorate


def list_heads() -> list[str]:
    return sorted(_HEADS)


def head_class(name: str) -> type[Head]:
    try:
        return _HEADS[name]
    except KeyError:
        raise AqaError(
            f"unknown head {name!r}{did_you_mean(name, list_heads())}; "
            f"known heads: {', '.join(list_heads())}"
        ) from None


def head_options(name: str, options: dict[str, Any] | HeadOptions | None = None) -> HeadOptions:
    """The validated `head.Options` of head `name` (AqaError naming `head.<key>` otherwise)."""
    return head_class(name).options(options)


def build_head(name: str, in_dim: int, options: HeadOptions | None = None, **kw: Any) -> Head:
    """Instantiate head `name` for `in_dim`-dimensional features with its options (a validated
    `Options`, or keywords validated here)."""
    cls = head_class(name)
    return cls(in_dim, cls.options(options, **kw))


# importing the modules runs their @register_head
from aqa_pipeline.train.heads import core, dae, dae_mt, mlp, usdl  # noqa: E402, F401

try:
    from aqa_pipeline.train.heads import interaqa  # noqa: F401
except ModuleNotFoundError as exc:
    if exc.name != "aqa_pipeline.train.heads.interaqa":
        raise
try:
    from aqa_pipeline.train.heads import gdlt  # noqa: F401
except ModuleNotFoundError as exc:
    if exc.name != "aqa_pipeline.train.heads.gdlt":
        raise

__all__ = ["Head", "HeadOptions", "build_head", "head_options", "head_class", "list_heads", "register_head"]
