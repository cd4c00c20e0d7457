"""The head registry: `register_head(name)`, `head_class`, `head_options`, `build_head`,
`list_heads`. Head modules import `register_head` from here; the package's __init__ imports
the head modules, so importing `aqa_pipeline.train.heads` registers every head.
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
