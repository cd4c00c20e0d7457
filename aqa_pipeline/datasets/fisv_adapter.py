"""Registers `fisv:DIR?target=TES|PCS`, reading the files with `datasets.fisv.read_fisv`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aqa_pipeline.datasets import no_more_options, register_adapter
from aqa_pipeline.datasets.base import LabelSet, check_finite, folds_from_split_column
from aqa_pipeline.datasets.fisv import read_fisv


@register_adapter("fisv")
def load(path: Path, options: dict[str, str]) -> LabelSet:
    """`fisv:DIR?target=TES|PCS` -> Fis-V scores (train.txt / test.txt), one fold."""
    target = options.pop("target", "TES")
    no_more_options(options, "fisv", ["target"])
    rows = read_fisv(path, target)
    ids = [r[0] for r in rows]
    score = np.array([r[1] for r in rows], dtype=np.float64)
    check_finite(score, ids, f"{path}: {target}")
    folds = folds_from_split_column([r[2] for r in rows], f"{path}: split")
    return LabelSet(name="fisv", source=str(path), video_ids=ids, score=score, folds=folds)
