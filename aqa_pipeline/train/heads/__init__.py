"""Score heads on cached features: one module per head, each a `Head` subclass with a typed
`Options` model, registered by name (`@register_head`).

Heads: mlp, dae, dae_mt, usdl, musdl, core, dae_core and the long-form heads interaqa and
gdlt (clip sequences). To add one: a module here with a `@register_head("name")` Head
subclass and its `Options` (see mlp.py), a config in aqa_pipeline/configs/train/ and a test;
the module is imported by `import_all` below.
"""

from __future__ import annotations

from aqa_pipeline.plugins import import_all
from aqa_pipeline.train.heads.base import Head, HeadOptions
from aqa_pipeline.train.heads.registry import (
    build_head,
    head_class,
    head_options,
    list_heads,
    register_head,
)

# every module here is imported, which runs their @register_head
import_all(__name__, __path__)

__all__ = ["Head", "HeadOptions", "build_head", "head_class", "head_options", "list_heads",
           "register_head"]  # fmt: skip
