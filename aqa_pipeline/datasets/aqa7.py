"""AQA-7 (Parmar & Morris, WACV 2019): seven sports, one model per sport class.

Two layouts are read:
- the AQA-7 release: `Split_4/split_4_train_list.mat` and `split_4_test_list.mat`
  (`consolidated_train_list` / `consolidated_test_list`, rows [class 1-7, sample, score]);
  video ids `{class}-out/{idx:03d}` (the frame folders, e.g. diving-out/001);
- UNLV-Dive (the diving class as released with MTL-AQA): MTL-AQA-format pickles
  (`final_annotations_dict.pkl`, `train_split_0.pkl`, `test_split_0.pkl`); ids
  `{event:02d}_{clip:02d}`.

Option class=NAME (default diving) or class=all: every class present becomes a fold of its
own (models per class, averaged with Fisher-z as the papers do). The class is also the
exemplar group for the contrastive heads. All options: `Aqa7Options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import create_model

from aqa_pipeline.datasets.base import AdapterOptions, Fold, LabelSet, check_finite
from aqa_pipeline.datasets.mtl_aqa import Missing, diving_labels
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError

CLASSES = (
    "diving",
    "gym_vault",
    "ski_big_air",
    "snowboard_big_air",
    "sync_diving_3m",
    "sync_diving_10m",
    "trampoline",
)
MAT_ID = "{class}-out/{idx:03d}"
Aqa7Class = Literal[(*CLASSES, "all")]  # the class option: one sport, or all


def _split_dir(path: Path) -> Path | None:
    for d in (path / "Split_4", path):
        if (d / "split_4_train_list.mat").is_file():
            return d
    return None


def read_mat_list(path: Path, key: str) -> np.ndarray:
    """(n, 3) array [class (1-based), sample index, score] from one AQA-7 split file."""
    from scipy.io import loadmat

    if not path.is_file():
        raise AqaError(f"{path}: not found")
    try:
        table = np.asarray(loadmat(str(path))[key], dtype=np.float64)
    except (KeyError, ValueError, OSError) as exc:
        raise AqaError(f"{path}: no readable {key!r} table ({exc})") from exc
    if table.ndim != 2 or table.shape[1] < 3:
        raise AqaError(f"{path}: {key} should have rows [class, sample, score], got {table.shape}")
    return table[:, :3]


def mat_labels(split_dir: Path, wanted: str, id_format: str) -> LabelSet:
    """Class `wanted` (or every class with training samples when "all"), one fold each."""
    train = read_mat_list(split_dir / "split_4_train_list.mat", "consolidated_train_list")
    test = read_mat_list(split_dir / "split_4_test_list.mat", "consolidated_test_list")
    present = {int(c) for c in train[:, 0]}
    classes = (
        [n for i, n in enumerate(CLASSES) if i + 1 in present] if wanted == "all" else [wanted]
    )
    ids: list[str] = []
    scores: list[float] = []
    cls: list[int] = []
    folds = []
    for name in classes:
        c = CLASSES.index(name) + 1
        parts = []
        for table in (train, test):
            rows = table[table[:, 0] == c]
            start = len(ids)
            for _, idx, score in rows:
                try:
                    ids.append(id_format.format(**{"class": name, "idx": int(idx)}))
                except (KeyError, ValueError) as exc:
                    raise AqaError(f"id_format {id_format!r}: {exc} (fields: class, idx)") from None
                scores.append(float(score))
                cls.append(c - 1)
            parts.append(np.arange(start, len(ids), dtype=np.int64))
        if not len(parts[0]) or not len(parts[1]):
            raise AqaError(f"{split_dir}: class {name} has no train or no test samples")
        folds.append(Fold(name, parts[0], parts[1]))
    score = np.array(scores)
    check_finite(score, ids, f"{split_dir}: score")
    return LabelSet(
        name="aqa7",
        source=str(split_dir),
        video_ids=ids,
        score=score,
        folds=folds,
        class_id=np.array(cls, dtype=np.int64),
        class_names=list(CLASSES),
    )


# `class` is a Python keyword, so that field is declared by name (an alias would make the
# config errors name the attribute, class_, instead of the key)
_ClassOption = create_model(
    "_ClassOption", __base__=AdapterOptions, **{"class": (Aqa7Class, "diving")}
)


class Aqa7Options(_ClassOption):  # type: ignore[misc, valid-type]
    """`aqa7:DIR?class=...&id_format=...&missing=error|drop`; `class` (a sport, or all) is
    read as `options.sport`."""

    id_format: str | None = None  # None: {class}-out/{idx:03d} (.mat), else UNLV-Dive's
    missing: Missing = "error"  # UNLV-Dive: a split entry without an annotation

    @property
    def sport(self) -> str:
        return getattr(self, "class")


@register_adapter("aqa7", options=Aqa7Options)
def load(path: Path, options: Aqa7Options) -> LabelSet:
    """`aqa7:DIR?class=diving[&id_format=...][&missing=drop]` -> AQA-7 scores, one fold.

    Options (Aqa7Options): class=diving|gym_vault|ski_big_air|snowboard_big_air|
    sync_diving_3m|sync_diving_10m|trampoline|all (default diving; all: one fold per class),
    id_format (default {class}-out/{idx:03d} for the .mat release, {event:02d}_{clip:02d}
    for UNLV-Dive), missing=error|drop (UNLV-Dive's unannotated split entries)."""
    wanted, id_format, missing = options.sport, options.id_format, options.missing
    split_dir = _split_dir(path)
    if split_dir is not None:
        return mat_labels(split_dir, wanted, id_format or MAT_ID)
    if (path / "train_split_0.pkl").is_file():
        if wanted not in ("diving", "all"):
            raise AqaError(f"aqa7: {path} holds UNLV-Dive (the diving class only), not {wanted!r}")
        labels = diving_labels(
            path, "aqa7", 0, id_format or "{event:02d}_{clip:02d}", missing=missing
        )
        labels.folds[0].name = "diving"
        labels.class_id = np.zeros(labels.n, dtype=np.int64)
        labels.class_names = ["diving"]
        labels.judges = None  # UNLV-Dive has no judge scores
        return labels
    raise AqaError(
        f"aqa7: {path} has neither Split_4/split_4_train_list.mat (AQA-7) nor "
        "train_split_0.pkl (UNLV-Dive)"
    )
