"""Generic CSV labels, one row per video:

    video_id,score[,split][,difficulty][,judge_1..judge_n][,sub_<name>...][,class]

- split: train|test (one fold) or integer fold numbers (k-fold cross-validation: fold i
  tests on the rows marked i). Without a split column, options test_fraction=F (0 < F < 1)
  and split_seed=S (an int, default 0) draw a seeded random split.
- difficulty: a positive multiplier (DD); judge_1..judge_n: judge scores (`judges`);
  sub_<name>: sub-scores (`subscores`, e.g. the GRS items); class: the exemplar group of
  the contrastive heads (any string).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from pydantic import Field

from aqa_pipeline.datasets.base import (
    AdapterOptions,
    LabelSet,
    check_finite,
    folds_from_split_column,
    random_split,
)
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError

_JUDGE = re.compile(r"judge_(\d+)$")


def _number(text: str, where: str, column: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise AqaError(f"{where}: {column} {text!r} is not a number") from None


class CsvOptions(AdapterOptions):
    """`csv:FILE?test_fraction=F&split_seed=S`: a seeded random split, for a file without a
    split column."""

    test_fraction: float | None = Field(None, gt=0, lt=1)  # the test share; None: no split
    split_seed: int = 0


@register_adapter("csv", options=CsvOptions)
def load(path: Path, options: CsvOptions) -> LabelSet:
    """`csv:FILE.csv` -> video_id,score[,split][,difficulty][,judge_*][,sub_*] rows.

    Options (CsvOptions), only for a file without a split column: test_fraction=F
    (0 < F < 1) draws a random test part of that share, seeded by split_seed=S (default 0)."""
    test_fraction, split_seed = options.test_fraction, options.split_seed
    if not path.is_file():
        raise AqaError(f"{path}: not a file")
    with path.open(newline="", encoding="utf-8-sig") as fh:  # a BOM (Excel) is dropped
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        for need in ("video_id", "score"):
            if need not in columns:
                raise AqaError(f"{path}: no {need!r} column (columns: {', '.join(columns)})")
        judges = sorted((c for c in columns if _JUDGE.match(c)), key=lambda c: int(c[6:]))
        subs = [c for c in columns if c.startswith("sub_")]
        rows = list(reader)
    if not rows:
        raise AqaError(f"{path}: no rows")
    ids, score, split, dd, jud, sub, cls = [], [], [], [], [], [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        vid = (row.get("video_id") or "").strip()
        if not vid:
            raise AqaError(f"{where}: empty video_id")
        ids.append(vid)
        score.append(_number(row["score"], where, "score"))
        if "split" in columns:
            split.append((row["split"] or "").strip())
        if "difficulty" in columns:
            dd.append(_number(row["difficulty"], where, "difficulty"))
        jud.append([_number(row[c], where, c) for c in judges])
        sub.append([_number(row[c], where, c) for c in subs])
        if "class" in columns:
            cls.append((row["class"] or "").strip())
    what = str(path)
    score_arr = np.array(score)
    check_finite(score_arr, ids, f"{what}: score")
    if split and test_fraction is not None:
        raise AqaError(f"{path}: has a split column; drop the test_fraction option")
    if split:
        folds = folds_from_split_column(split, what)
    elif test_fraction is not None:
        folds = random_split(len(ids), test_fraction, split_seed, what)
    else:
        raise AqaError(f"{path}: no split column; add one or use {path}?test_fraction=0.2")
    labels = LabelSet(name="csv", source=what, video_ids=ids, score=score_arr, folds=folds)
    if dd:
        labels.difficulty = np.array(dd)
        check_finite(labels.difficulty, ids, f"{what}: difficulty", positive=True)
    if judges:
        labels.judges = np.array(jud)
        check_finite(labels.judges, ids, f"{what}: judge scores")
    if subs:
        labels.subscores = np.array(sub)
        labels.subscore_names = [c[4:] for c in subs]
        check_finite(labels.subscores, ids, f"{what}: sub-scores")
    if cls:
        labels.class_names = sorted(set(cls))
        lookup = {c: i for i, c in enumerate(labels.class_names)}
        labels.class_id = np.array([lookup[c] for c in cls], dtype=np.int64)
    return labels
