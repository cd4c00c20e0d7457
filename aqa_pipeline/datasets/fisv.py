"""Fis-V figure skating labels (500 programs, official split 400 train / 100 test).

Folder layout (as released with MS_LSTM / GDLT):

    <root>/train.txt   one program per line: "id TES PCS deductions"  (400 lines)
    <root>/test.txt    same format                                    (100 lines)

The video id is the first field, which is also the stem of the program's feature file
(`swintx_avg_fps25_clip32/<id>.npy`). The target is TES (technical element score, 6-43)
or PCS (program component score, 10-38); both papers train one model per target and divide
the score by 43.

Labels spec: `fisv:DIR[?target=TES|PCS]` (any case; default TES), one fold "split".
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from aqa_pipeline.datasets.base import AdapterOptions, LabelSet, labels_from_rows
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError

TARGETS = ("TES", "PCS")
FIELDS = ("TES", "PCS", "deductions")


def read_fisv_file(path: Path) -> dict[str, dict[str, float]]:
    """Parse one split file: {video_id: {"TES": .., "PCS": .., "deductions": ..}}."""
    if not path.is_file():
        raise AqaError(f"Fis-V labels: {path} not found")
    rows: dict[str, dict[str, float]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise AqaError(f"{path}:{n}: expected 'id TES PCS deductions', got {line!r}")
        vid = parts[0]
        if vid in rows:
            raise AqaError(f"{path}:{n}: duplicate video id {vid!r}")
        try:
            rows[vid] = {k: float(v) for k, v in zip(FIELDS, parts[1:], strict=True)}
        except ValueError as exc:
            raise AqaError(f"{path}:{n}: not a number in {line!r}") from exc
    if not rows:
        raise AqaError(f"{path}: no labels")
    return rows


def read_fisv(root: str | Path, target: str = "TES") -> list[tuple[str, float, str, dict]]:
    """All programs as (video_id, score, split, extras) with split train|test, in file order.

    `extras` holds all three fields (TES, PCS, deductions) whatever the target.
    """
    root = Path(root)
    key = target.upper()
    if key not in TARGETS:
        raise AqaError(f"Fis-V target must be TES or PCS, got {target!r}")
    out: list[tuple[str, float, str, dict]] = []
    seen: set[str] = set()
    for split in ("train", "test"):
        for vid, fields in read_fisv_file(root / f"{split}.txt").items():
            if vid in seen:
                raise AqaError(f"Fis-V labels: video {vid!r} is in both train and test")
            seen.add(vid)
            out.append((vid, fields[key], split, fields))
    return out


class FisvOptions(AdapterOptions):
    """`fisv:DIR?target=...`: the score to learn."""

    target: Literal[TARGETS] = "TES"  # technical elements or program components


@register_adapter("fisv", options=FisvOptions)
def load(path: Path, options: FisvOptions) -> LabelSet:
    """`fisv:DIR?target=TES|PCS` -> Fis-V scores (train.txt / test.txt), one fold.

    Options (FisvOptions): target=TES|PCS, in any case (default TES)."""
    return labels_from_rows("fisv", path, read_fisv(path, options.target), options.target)
