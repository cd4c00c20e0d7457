"""LOGO group artistic swimming labels (CVPR 2023): 200 long videos.

Folder layout (the "LOGO Anno&Split" release):

    <root>/anno_dict.pkl     {(event, idx): record}; record[1] is the score
    <root>/train_split3.pkl  list of (event, idx) keys
    <root>/test_split3.pkl   list of (event, idx) keys

The video id of (event, idx) is "<event>_<idx>", the stem InterAQA gives the per-video
feature files. Scores are divided by 100 for training. The pickles are read with the
project's restricted unpickler (containers, numbers, strings and numpy arrays only).

Labels spec: `logo:DIR[?split=split3]` (`LogoOptions`: split picks train_<split>.pkl /
test_<split>.pkl).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aqa_pipeline.datasets.base import AdapterOptions, LabelSet, labels_from_rows, load_pickle
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError


def logo_video_id(key: Any) -> str:
    """(event, idx) -> "event_idx"."""
    if not isinstance(key, tuple | list) or len(key) != 2:
        raise AqaError(f"LOGO: expected (event, idx) keys, got {key!r}")
    return f"{key[0]}_{key[1]}"


def read_logo(root: str | Path, split_name: str = "split3") -> list[tuple[str, float, str, dict]]:
    """All split videos as (video_id, score, split, extras), train first then test;
    extras = {"event", "idx"}."""
    root = Path(root)
    anno = load_pickle(root / "anno_dict.pkl")
    if not isinstance(anno, dict):
        raise AqaError(f"{root / 'anno_dict.pkl'}: expected a dict, got {type(anno).__name__}")
    out: list[tuple[str, float, str, dict]] = []
    seen: set[str] = set()
    for split in ("train", "test"):
        path = root / f"{split}_{split_name}.pkl"
        keys = load_pickle(path)
        if not isinstance(keys, list | tuple):
            raise AqaError(f"{path}: expected a list of (event, idx) keys")
        for key in keys:
            key = tuple(key) if isinstance(key, list) else key
            if key not in anno:
                raise AqaError(f"{path}: {key!r} is not in anno_dict.pkl")
            vid = logo_video_id(key)
            if vid in seen:
                raise AqaError(f"LOGO: video {vid!r} is listed twice in the splits")
            seen.add(vid)
            try:
                score = float(anno[key][1])
            except (TypeError, IndexError, KeyError, ValueError) as exc:
                raise AqaError(f"LOGO: the record of {key!r} has no score at index 1") from exc
            out.append((vid, score, split, {"event": str(key[0]), "idx": key[1]}))
    return out


class LogoOptions(AdapterOptions):
    """`logo:DIR?split=NAME`."""

    split: str = "split3"  # reads train_<split>.pkl / test_<split>.pkl; the fold's name


@register_adapter("logo", options=LogoOptions)
def load(path: Path, options: LogoOptions) -> LabelSet:
    """`logo:DIR?split=split3` -> LabelSet with one train/test fold.

    Options (LogoOptions): split=NAME (default split3) picks train_NAME.pkl / test_NAME.pkl
    and names the fold."""
    rows = read_logo(path, options.split)
    return labels_from_rows("logo", path, rows, "score", fold_name=options.split)
