"""Label adapters: annotations of each dataset -> a `LabelSet` keyed by the store's video ids.

Labels spec (the `--labels` option and the `labels:` key of a train config):

    NAME:PATH[?key=value&key=value...]

NAME picks the adapter, PATH is its file or folder, options follow like a URL query. A PATH
ending in .csv without a NAME means `csv:`. Adapters and their options:

    mtl_aqa:DIR     final_annotations_dict_with_dive_number.pkl (or final_annotations_dict.pkl)
                    + train_split_0.pkl / test_split_0.pkl. Score = final score; difficulty,
                    the 7 judge scores (as `judges`) and the dive number (exemplar class)
                    when present. Options: split=0, id_format={event:02d}_{clip:02d},
                    missing=error|drop (split entries without an annotation).
    aqa7:DIR        AQA-7 per sport class. DIR holds Split_4/split_4_{train,test}_list.mat
                    (the AQA-7 release) or, for the diving class, UNLV-Dive's
                    final_annotations_dict.pkl + {train,test}_split_0.pkl.
                    Options: class=diving|gym_vault|ski_big_air|snowboard_big_air|
                    sync_diving_3m|sync_diving_10m|trampoline|all (all: one fold per class,
                    averaged with Fisher-z), id_format ({class}-out/{idx:03d} for the .mat
                    release, {event:02d}_{clip:02d} for UNLV-Dive), missing=error|drop
                    (UNLV-Dive's split lists one unannotated dive: use missing=drop).
    jigsaws:DIR     label.pkl (6 GRS items per trial, as `subscores`; score = their sum) and
                    splits.pkl (MUSDL's 4 folds per task). Options: task=Suturing|
                    Needle_Passing|Knot_Tying|all, fold=0..3 (default: all four folds),
                    id_format={trial}_capture1 (MUSDL's frame folders; fields {trial},
                    {task}).
    fisv:DIR        Fis-V train.txt / test.txt ("id TES PCS deductions"). Option target=TES|PCS.
    rg:DIR, logo:DIR   the long-form datasets (see their modules), when present.
    csv:FILE        columns video_id,score[,split][,difficulty][,judge_1..judge_n][,sub_*]
                    [,class]. split is train|test, or an integer fold number for k-fold
                    cross-validation (fold i tests on the rows marked i and trains on the
                    rest). Without a split column: test_fraction=0.2[&split_seed=0] draws a
                    seeded random split.

Examples: `mtl_aqa:/data/MTL-AQA/info`, `jigsaws:/data/jigsaws?task=Suturing&fold=0`,
`csv:labels.csv`, `labels.csv?test_fraction=0.25`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

from aqa_pipeline.datasets.base import Fold, LabelSet, load_pickle
from aqa_pipeline.errors import AqaError

Adapter = Callable[[Path, dict[str, str]], LabelSet]
_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(name: str) -> Callable[[Adapter], Adapter]:
    """Decorator: `fn(path, options) -> LabelSet` becomes the adapter `name`."""

    def decorate(fn: Adapter) -> Adapter:
        _ADAPTERS[name] = fn
        return fn

    return decorate


def list_adapters() -> list[str]:
    return sorted(_ADAPTERS)


def adapter(name: str) -> Adapter:
    """The registered adapter `name` (its docstring says what it reads)."""
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


def load_labels(spec: str | LabelSet) -> LabelSet:
    """Load labels from a spec string (see the module docstring); a LabelSet passes through."""
    if isinstance(spec, LabelSet):
        return spec
    name, path, options = parse_spec(spec)
    if not path.exists():
        raise AqaError(f"labels spec {spec!r}: {path} does not exist")
    labels = _ADAPTERS[name](path, dict(options))
    labels.source = str(spec)
    return labels


def no_more_options(options: dict[str, str], adapter: str, known: list[str]) -> None:
    if options:
        raise AqaError(f"{adapter}: unknown option(s) {sorted(options)}; it takes {known}")


# importing the adapters runs their @register_adapter
from aqa_pipeline.datasets import (  # noqa: E402, F401
    aqa7,
    fisv_adapter,
    generic_csv,
    jigsaws,
    mtl_aqa,
)

for _optional in ("rg", "logo"):  # the long-form datasets' adapters, when present
    try:
        importlib.import_module(f"aqa_pipeline.datasets.{_optional}")
    except ModuleNotFoundError as exc:
        if exc.name != f"aqa_pipeline.datasets.{_optional}":
            raise

__all__ = [
    "adapter",
    "Fold",
    "LabelSet",
    "list_adapters",
    "load_labels",
    "load_pickle",
    "parse_spec",
    "register_adapter",
]
