"""JIGSAWS (Gao et al., 2014): 103 surgical trials in three tasks, scored by 6 GRS items
(1-5 each, total 6-30), with MUSDL's 4-fold cross-validation per task.

Files (MUSDL's info folder):
    label.pkl    {"Suturing_B001": [6 GRS items], ...}
    splits.pkl   {"Suturing": [[trial, ...] x 4 folds], "Needle_Passing": ..., "Knot_Tying": ...}

Fold i tests on splits[task][i] and trains on the other three. The 6 items are `subscores`
(for multi-path heads); the score is their sum. Options (`JigsawsOptions`): task (default
Suturing; `all` = the three tasks' folds together, 12 models, averaged with Fisher-z),
fold=0..3 or all (default all four), id_format (default `{trial}_capture1`, MUSDL's frame
folders of the left view).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from aqa_pipeline.datasets.base import (
    AdapterOptions,
    Fold,
    LabelSet,
    check_finite,
    load_pickle,
    preview,
)
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError

TASKS = ("Suturing", "Needle_Passing", "Knot_Tying")
GRS_ITEMS = (
    "respect_for_tissue",
    "suture_needle_handling",
    "time_and_motion",
    "flow_of_operation",
    "overall_performance",
    "quality_of_final_product",
)
DEFAULT_ID = "{trial}_capture1"


def read_jigsaws(folder: Path) -> tuple[Mapping[str, list], Mapping[str, list]]:
    labels = load_pickle(folder / "label.pkl")
    splits = load_pickle(folder / "splits.pkl")
    if not isinstance(labels, Mapping) or not isinstance(splits, Mapping):
        raise AqaError(f"{folder}: label.pkl and splits.pkl should hold dicts")
    return labels, splits


class JigsawsOptions(AdapterOptions):
    """`jigsaws:DIR?task=...&fold=...&id_format=...`."""

    task: Literal[(*TASKS, "all")] = "Suturing"
    fold: int | Literal["all"] = "all"  # one of splits.pkl's folds (0..3), or every fold
    id_format: str = DEFAULT_ID  # fields {trial}, {task}


@register_adapter("jigsaws", options=JigsawsOptions)
def load(path: Path, options: JigsawsOptions) -> LabelSet:
    """`jigsaws:DIR?task=Suturing[&fold=all|K]` -> GRS scores and sub-scores, 4 folds.

    Options (JigsawsOptions): task=Suturing|Needle_Passing|Knot_Tying|all (default
    Suturing), fold=K (0..3; a fold number of splits.pkl) or all (default),
    id_format={trial}_capture1 (fields {trial}, {task})."""
    fold_opt, id_format = options.fold, options.id_format
    tasks = list(TASKS) if options.task == "all" else [options.task]
    labels, splits = read_jigsaws(path)
    ids: list[str] = []
    items: list[list[float]] = []
    task_of: list[int] = []
    folds: list[Fold] = []
    for task in tasks:
        if task not in splits:
            raise AqaError(f"{path / 'splits.pkl'}: no folds for task {task}")
        task_folds = [list(f) for f in splits[task]]
        start = len(ids)
        trials = [t for f in task_folds for t in f]
        if len(set(trials)) != len(trials):
            raise AqaError(f"{path / 'splits.pkl'}: {task} lists a trial in two folds")
        missing = [t for t in trials if t not in labels]
        if missing:
            raise AqaError(
                f"{path / 'label.pkl'}: {len(missing)} trial(s) of the {task} folds have no "
                f"label: {preview(missing)}"
            )
        for t in trials:
            try:
                ids.append(id_format.format(trial=t, task=task))
            except (KeyError, ValueError) as exc:
                raise AqaError(f"id_format {id_format!r}: {exc} (fields: trial, task)") from None
            row = [float(v) for v in labels[t]]
            if len(row) != len(GRS_ITEMS):
                raise AqaError(f"{path / 'label.pkl'}: {t} has {len(row)} GRS items, expected 6")
            items.append(row)
            task_of.append(TASKS.index(task))
        sizes = [len(f) for f in task_folds]
        bounds = np.cumsum([0, *sizes]) + start
        n_folds = len(task_folds)
        wanted = range(n_folds) if fold_opt == "all" else [_fold_number(fold_opt, n_folds)]
        for k in wanted:
            test = np.arange(bounds[k], bounds[k + 1], dtype=np.int64)
            train = np.concatenate(
                [np.arange(bounds[j], bounds[j + 1]) for j in range(len(task_folds)) if j != k]
            ).astype(np.int64)
            folds.append(Fold(f"{task}/fold{k}", train, test))
    subscores = np.array(items)
    check_finite(subscores, ids, f"{path / 'label.pkl'}: GRS items")
    return LabelSet(
        name="jigsaws",
        source=str(path),
        video_ids=ids,
        score=subscores.sum(axis=1),
        folds=folds,
        subscores=subscores,
        subscore_names=list(GRS_ITEMS),
        class_id=np.array(task_of, dtype=np.int64),
        class_names=list(TASKS),
    )


def _fold_number(k: int, n: int) -> int:
    if not 0 <= k < n:
        raise AqaError(f"jigsaws: fold must be 0..{n - 1} or all, got {k}")
    return k
