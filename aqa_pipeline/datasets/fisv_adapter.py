"""Registers `fisv:DIR?target=TES|PCS`, reading the files with `datasets.fisv.read_fisv`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aqa_pipeline.datasets import no_more_options, register_adapter
from aqa_pipeline.datasets.base import Fold, LabelSet, check_finite
from aqa_pipeline.datasets.fisv import read_fisv


@register_adapter("fisv")
def load(path: Path, options: dict[str, str]) -> LabelSet:
    target = options.pop("target", "TES")
    no_more_options(options, "fisv", ["target"])
    rows = read_fisv(path, target)
    ids = [r[0] for r in rows]
    score = np.array([r[1] for r in rows], dtype=np.float64)
    check_finite(score, ids, f"{path}: {target}")
    split = np.array([r[2] for r in rows])
    fold = Fold(
        "split",
        np.flatnonzero(split == "train").astype(np.int64),
        np.flatnonzero(split == "test").astype(np.int64),
    )
    return LabelSet(name="fisv", source=str(path), video_ids=ids, score=score, folds=[fold])
