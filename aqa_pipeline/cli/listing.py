"""`aqa list WHAT`: the registries (backbones, weights, recipes, configs, heads, datasets)."""

from __future__ import annotations

import inspect
from pathlib import Path

import click

WHAT = ("backbones", "weights", "recipes", "configs", "heads", "datasets")


def first_line(text: str | None) -> str:
    return (inspect.cleandoc(text or "").splitlines() or [""])[0]


def yaml_summary(path: Path) -> str:
    """The first comment line of a shipped config (what it is for)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def rows(what: str) -> list[tuple[str, str]]:
    """(name, one-line description) of every entry of registry `what`."""
    if what == "backbones":
        from aqa_pipeline.extract.backbones import get_spec, list_backbones

        out = []
        for name in list_backbones():
            spec = get_spec(name)
            dim = f"{spec.feature_dim}-d" if spec.feature_dim else "d by arch"
            out.append((name, f"{dim}, expects {spec.normalisation}: {spec.description}"))
        return out
    if what == "weights":
        from aqa_pipeline.extract.backbones.weights import list_weights

        return [(w.name, w.summary()[len(w.name) :].strip()) for w in list_weights()]
    if what in ("recipes", "configs"):
        from aqa_pipeline.config import configs_dir, list_configs

        kind = "extract" if what == "recipes" else "train"
        return [(n, yaml_summary(configs_dir(kind) / f"{n}.yaml")) for n in list_configs(kind)]
    if what == "heads":
        from aqa_pipeline.train.heads import head_class, list_heads

        out = []
        for name in list_heads():
            cls = head_class(name)
            options = ", ".join(cls.Options.model_fields)
            out.append((name, f"[{cls.input_kind}] {first_line(cls.__doc__)} Options: {options}"))
        return out
    from aqa_pipeline.datasets import adapter, list_adapters

    return [(name, first_line(adapter(name).__doc__)) for name in list_adapters()]


@click.command("list")
@click.argument("what", type=click.Choice(WHAT))
def list_(what: str) -> None:
    """List what the tool knows: backbones, weights (known files and the preprocessing they
    expect), recipes (shipped extract configs), configs (shipped train configs), heads
    (with their options) or datasets (label adapters for --labels NAME:PATH)."""
    entries = rows(what)
    width = max((len(name) for name, _ in entries), default=0)
    for name, text in entries:
        click.echo(f"{name:<{width}}  {text}")
