"""The labels-adapter registry: `register_adapter`, `adapter`, `list_adapters`, and
`load_labels(spec)` which parses a `NAME:PATH?key=value` spec, validates its options as the
adapter's typed model and calls the adapter (see the package docstring for the specs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aqa_pipeline.config import parse
from aqa_pipeline.datasets.base import AdapterOptions, LabelSet
from aqa_pipeline.errors import AqaError

# fn(path, options) with options an instance of the adapter's Options model
Adapter = Callable[[Path, Any], LabelSet]
_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(
    name: str, options: type[AdapterOptions] = AdapterOptions
) -> Callable[[Adapter], Adapter]:
    """Decorator: `fn(path, options) -> LabelSet` becomes the adapter `name`, taking the
    options of the `options` model (an AdapterOptions subclass; the base class takes none).
    `load_labels` validates the spec's query as that model before calling fn, and the model
    is `fn.Options` (`adapter(name).Options.model_fields` are the option names)."""
    if not (isinstance(options, type) and issubclass(options, AdapterOptions)):
        raise TypeError(f"adapter {name}: options must be an AdapterOptions subclass")

    def decorate(fn: Adapter) -> Adapter:
        fn.Options = options  # type: ignore[attr-defined]
        _ADAPTERS[name] = fn
        return fn

    return decorate


def list_adapters() -> list[str]:
    return sorted(_ADAPTERS)


def adapter(name: str) -> Adapter:
    """The registered adapter `name`: its docstring says what it reads, its `Options` (an
    AdapterOptions model) which options it takes."""
    if name not in _ADAPTERS:
        raise AqaError(f"unknown labels adapter {name!r}; known: {', '.join(list_adapters())}")
    return _ADAPTERS[name]


def parse_spec(spec: str) -> tuple[str, Path, dict[str, str]]:
    """'name:path?k=v&k2=v2' -> (name, Path(path), {k: v, ...})."""
    text = str(spec).strip()
    if not text:
        raise AqaError("empty labels spec; expected NAME:PATH[?key=value&...]")
    body, _, query = text.partition("?")
    name, sep, path = body.partition(":")
    if not sep or name not in _ADAPTERS:
        if body.lower().endswith(".csv"):
            name, path = "csv", body
        elif sep:
            raise AqaError(
                f"labels spec {spec!r}: unknown dataset {name!r}; "
                f"known: {', '.join(list_adapters())}"
            )
        else:
            raise AqaError(f"labels spec {spec!r}: expected NAME:PATH[?key=value&...]")
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in options:
            raise AqaError(f"labels spec {spec!r}: option {key!r} given twice")
        options[key] = value
    return name, Path(path), options


def parse_options(name: str, query: dict[str, str], where: str) -> AdapterOptions:
    """Validate a spec's query (`parse_spec`'s dict) as adapter `name`'s Options; an unknown
    key or a bad value is one AqaError (exit 1) naming `name?key`."""
    return parse(adapter(name).Options, query, where, prefix=f"{name}?")


def load_labels(spec: str | LabelSet) -> LabelSet:
    """Load labels from a spec string (see the module docstring); a LabelSet passes through."""
    if isinstance(spec, LabelSet):
        return spec
    name, path, query = parse_spec(spec)
    options = parse_options(name, query, f"labels spec {spec!r}")
    if not path.exists():
        raise AqaError(f"labels spec {spec!r}: {path} does not exist")
    labels = _ADAPTERS[name](path, options)
    labels.source = str(spec)
    return labels
