"""Score heads on cached features: one module per head, each a `Head` subclass with a typed
`Options` model, registered by name (`@register_head`).

Heads: mlp, dae, dae_mt, usdl, musdl, core, dae_core and the long-form heads interaqa and
gdlt (clip sequences). To add one: a module here with `@register_head("name")`, its import
below, a config in aqa_pipeline/configs/train/ and a test.
"""

from __future__ import annotations

# importing the modules runs their @register_head
from aqa_pipeline.train.heads import core, dae, dae_mt, gdlt, interaqa, mlp, usdl  # noqa: E402, F401, I001
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.registry import (
    build_head,
    head_class,
    head_options,
    list_heads,
    register_head,
)

__all__ = ["Head", "HeadOptions", "build_head", "head_class", "head_options", "list_heads",
           "register_head"]  # fmt: skip
