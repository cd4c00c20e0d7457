"""MTL-AQA (Parmar & Morris, CVPR 2019): 1412 dives keyed (event, clip), split 0 = 1059/353.

Files in the folder (the release's MTL-AQA_split_0_data, or MUSDL's / CoRe's info folder):

    final_annotations_dict_with_dive_number.pkl   {(event, clip): {"final_score", "difficulty",
                                                   "judge_scores" (7,), "dive_number",
                                                   "start_frame", "end_frame", ...}}
    final_annotations_dict.pkl                    the same without judges and dive numbers
    train_split_0.pkl, test_split_0.pkl           lists of (event, clip)

The first annotation file present is used (option annotations=FILE picks one). Video ids
follow the frame folders, `{event:02d}_{clip:02d}` (option id_format). Options:
`MtlAqaOptions`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from aqa_pipeline.datasets.base import (
    AdapterOptions,
    Fold,
    LabelSet,
    check_finite,
    load_pickle,
    rows_of,
)
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError

log = logging.getLogger(__name__)
ANNOTATION_FILES = (
    "final_annotations_dict_with_dive_number.pkl",
    "augmented_final_annotations_dict.pkl",
    "final_annotations_dict.pkl",
)
DEFAULT_ID = "{event:02d}_{clip:02d}"
# a split entry without an annotation: an error naming it, or left out with a warning
Missing = Literal["error", "drop"]


def key_of(item: Any, what: str) -> tuple[int, int]:
    """(event, clip) from a split entry or annotation key (numpy ints allowed)."""
    try:
        event, clip = item
        return int(event), int(clip)
    except (TypeError, ValueError):
        raise AqaError(f"{what}: expected (event, clip) keys, got {item!r}") from None


def video_id(key: tuple[int, int], id_format: str) -> str:
    try:
        return id_format.format(event=key[0], clip=key[1])
    except (KeyError, IndexError, ValueError) as exc:
        raise AqaError(f"id_format {id_format!r}: {exc} (fields: event, clip)") from None


def find_annotations(folder: Path, name: str | None) -> Path:
    if name:
        path = folder / name
        if not path.is_file():
            raise AqaError(f"{path}: annotation file not found")
        return path
    for candidate in ANNOTATION_FILES:
        if (folder / candidate).is_file():
            return folder / candidate
    raise AqaError(f"{folder}: no MTL-AQA annotations (looked for {', '.join(ANNOTATION_FILES)})")


def read_annotations(path: Path) -> dict[tuple[int, int], Mapping[str, Any]]:
    data = load_pickle(path)
    if not isinstance(data, Mapping) or not data:
        raise AqaError(f"{path}: expected a dict {{(event, clip): annotation}}")
    out = {}
    for k, v in data.items():
        if not isinstance(v, Mapping) or "final_score" not in v:
            raise AqaError(f"{path}: entry {k!r} has no final_score")
        out[key_of(k, str(path))] = v
    return out


def read_split(path: Path) -> list[tuple[int, int]]:
    data = load_pickle(path)
    if not isinstance(data, list | tuple) or not data:
        raise AqaError(f"{path}: expected a non-empty list of (event, clip)")
    keys = [key_of(item, str(path)) for item in data]
    if len(set(keys)) != len(keys):
        raise AqaError(f"{path}: the split lists some dives twice")
    return keys


def diving_labels(
    folder: Path,
    name: str,
    split: int | str,
    id_format: str,
    annotations: str | None = None,
    missing: Missing = "error",
) -> LabelSet:
    """Labels from an MTL-AQA-format folder (also UNLV-Dive's): one fold, train/test.

    A split entry without an annotation is an error naming it; missing="drop" leaves such
    dives out instead (UNLV-Dive's split 0 lists one unannotated dive, 01_64)."""
    ann_path = find_annotations(folder, annotations)
    ann = read_annotations(ann_path)
    train_keys = read_split(folder / f"train_split_{split}.pkl")
    test_keys = read_split(folder / f"test_split_{split}.pkl")
    both = set(train_keys) & set(test_keys)
    if both:
        raise AqaError(f"{folder}: {len(both)} dive(s) in both train and test split {split}")
    keys = train_keys + test_keys
    unlabelled = [video_id(k, id_format) for k in keys if k not in ann]
    if unlabelled and missing != "drop":
        raise AqaError(
            f"{ann_path}: {len(unlabelled)} dive(s) of split {split} have no annotation: "
            f"{', '.join(unlabelled[:8])} (add ?missing=drop to the labels spec to leave them out)"
        )
    if unlabelled:
        log.warning(
            "%s: leaving out %d unannotated dive(s): %s",
            ann_path,
            len(unlabelled),
            ", ".join(unlabelled[:8]),
        )
        train_keys = [k for k in train_keys if k in ann]
        test_keys = [k for k in test_keys if k in ann]
        keys = train_keys + test_keys
    ids = [video_id(k, id_format) for k in keys]
    entries = [ann[k] for k in keys]
    what = f"{ann_path}"
    score = np.array([float(e["final_score"]) for e in entries])
    check_finite(score, ids, f"{what}: final_score")
    difficulty = judges = class_id = None
    class_names: list[str] = []
    if all("difficulty" in e for e in entries):
        difficulty = np.array([float(e["difficulty"]) for e in entries])
        check_finite(difficulty, ids, f"{what}: difficulty", positive=True)
    if all("judge_scores" in e for e in entries):
        judges = np.array([np.asarray(e["judge_scores"], dtype=np.float64) for e in entries])
        if judges.ndim != 2:
            raise AqaError(f"{what}: judge_scores differ in length between dives")
        check_finite(judges, ids, f"{what}: judge_scores")
    if all("dive_number" in e for e in entries):
        numbers = [str(e["dive_number"]) for e in entries]
        class_names = sorted(set(numbers))
        lookup = {c: i for i, c in enumerate(class_names)}
        class_id = np.array([lookup[c] for c in numbers], dtype=np.int64)
    index = {v: i for i, v in enumerate(ids)}
    n_train = len(train_keys)
    fold = Fold(
        f"split{split}",
        rows_of(ids[:n_train], index, what),
        rows_of(ids[n_train:], index, what),
    )
    return LabelSet(
        name=name,
        source=str(folder),
        video_ids=ids,
        score=score,
        folds=[fold],
        difficulty=difficulty,
        judges=judges,
        class_id=class_id,
        class_names=class_names,
    )


def annotation_table(
    folder: Path, annotations: str | None = None
) -> dict[tuple[int, int], Mapping]:
    """All annotations of the folder keyed (event, clip) (used by the manifest helper)."""
    return read_annotations(find_annotations(folder, annotations))


class MtlAqaOptions(AdapterOptions):
    """`mtl_aqa:DIR?split=0&id_format=...&annotations=FILE&missing=error|drop`."""

    split: int = Field(0, ge=0)  # reads train_split_<split>.pkl / test_split_<split>.pkl
    id_format: str = DEFAULT_ID  # fields {event}, {clip}
    annotations: str | None = None  # an annotation file in DIR; None: the first present
    missing: Missing = "error"


@register_adapter("mtl_aqa", options=MtlAqaOptions)
def load(path: Path, options: MtlAqaOptions) -> LabelSet:
    """`mtl_aqa:DIR[?split=0][&id_format=...]` -> MTL-AQA scores, difficulty and judges.

    Options (MtlAqaOptions): split=N (default 0), id_format={event:02d}_{clip:02d},
    annotations=FILE (default: the first of ANNOTATION_FILES present), missing=error|drop
    (a split entry without an annotation: an error, or left out)."""
    if not path.is_dir():
        raise AqaError(f"mtl_aqa: {path} is not a folder")
    return diving_labels(
        path, "mtl_aqa", options.split, options.id_format, options.annotations, options.missing
    )
