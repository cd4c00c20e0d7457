"""Registries that fill themselves: a plugin package (backbones, heads, labels adapters) calls
`import_all(__name__, __path__)` in its __init__, which imports every module in it, and each
module's decorator (`@register_backbone`, `@register_head`, `@register_adapter`) registers
what it defines. Adding a backbone, a head or an adapter is one new file in its package."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_all(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of `package` (its `__path__`) not starting with "_"; their names."""
    names = sorted(m.name for m in pkgutil.iter_modules(list(path)) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
