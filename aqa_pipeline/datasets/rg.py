"""Rhythmic Gymnastics (RG) labels: 1000 routines, 250 per apparatus, 200 train / 50 test each.

Folder layout (as released with ACTION-NET / GDLT):

    <root>/train.txt   header + one routine per line, tab-separated (800 lines)
    <root>/test.txt    same format                                 (200 lines)

Header: Video_Name, Difficulty_Score, Execution_Score, Total_Score, Penalty, Video_length
(the released header mixes tabs and spaces; the rows are tab-separated). Video names start
with the apparatus (`Ball_001`, `Clubs_012`, `Hoop_...`, `Ribbon_...`) and are the stems of
the feature files. Both papers train one model per apparatus on the total score, divided
by 25; difficulty and execution are available as targets too.

Labels spec: `rg:DIR[?apparatus=Ball|Clubs|Hoop|Ribbon|all][&target=total|difficulty|execution]`
(`RgOptions`; either in any case). apparatus=all (the default) gives one fold per apparatus
(the papers' per-apparatus models, averaged with Fisher-z), with the apparatus as `class_id`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from aqa_pipeline.datasets.base import AdapterOptions, Fold, LabelSet, check_finite
from aqa_pipeline.datasets.registry import register_adapter
from aqa_pipeline.errors import AqaError

APPARATUS = ("Ball", "Clubs", "Hoop", "Ribbon")
TARGETS = {
    "total": "Total_Score",
    "difficulty": "Difficulty_Score",
    "execution": "Execution_Score",
}


def read_rg_file(path: Path) -> list[dict[str, str]]:
    """Parse one split file into rows keyed by the header's column names."""
    if not path.is_file():
        raise AqaError(f"RG labels: {path} not found")
    lines = [line for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if not lines:
        raise AqaError(f"{path}: empty label file")
    header = lines[0].split()  # column names hold no spaces; the separators vary
    if "Video_Name" not in header:
        raise AqaError(f"{path}: expected a header starting with Video_Name, got {lines[0]!r}")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != len(header):
            raise AqaError(f"{path}:{n}: {len(parts)} fields, the header has {len(header)}")
        rows.append(dict(zip(header, (p.strip() for p in parts), strict=True)))
    return rows


def read_rg(
    root: str | Path, apparatus: str, target: str = "total"
) -> list[tuple[str, float, str, dict]]:
    """One apparatus as (video_id, score, split, extras) with split train|test, in file order.

    apparatus: Ball, Clubs, Hoop or Ribbon (any case); target: total, difficulty, execution.
    `extras` holds every numeric column of the row.
    """
    root = Path(root)
    names = {a.lower(): a for a in APPARATUS}
    if apparatus.lower() not in names:
        raise AqaError(f"RG apparatus must be one of {', '.join(APPARATUS)}, got {apparatus!r}")
    app = names[apparatus.lower()]
    column = TARGETS.get(target.lower())
    if column is None:
        raise AqaError(f"RG target must be one of {', '.join(TARGETS)}, got {target!r}")
    out: list[tuple[str, float, str, dict]] = []
    seen: set[str] = set()
    for split in ("train", "test"):
        for n, row in enumerate(read_rg_file(root / f"{split}.txt"), start=2):
            vid = row["Video_Name"]
            if vid.split("_")[0] != app:
                continue
            if vid in seen:
                raise AqaError(f"RG labels: video {vid!r} appears twice")
            seen.add(vid)
            try:
                extras = {k: float(v) for k, v in row.items() if k != "Video_Name"}
            except ValueError as exc:
                raise AqaError(f"{root / f'{split}.txt'}:{n}: not a number in {row}") from exc
            if column not in extras:
                raise AqaError(f"{root / f'{split}.txt'}: no {column} column")
            out.append((vid, extras[column], split, extras))
    if not out:
        raise AqaError(f"RG labels under {root}: no {app} routines")
    return out


class RgOptions(AdapterOptions):
    """`rg:DIR?apparatus=...&target=...`."""

    apparatus: Literal[(*APPARATUS, "all")] = "all"  # all: one fold per apparatus
    target: Literal[tuple(TARGETS)] = "total"


@register_adapter("rg", options=RgOptions)
def load(path: Path, options: RgOptions) -> LabelSet:
    """`rg:DIR?apparatus=...&target=...` -> LabelSet (one fold per apparatus).

    Options (RgOptions): apparatus=Ball|Clubs|Hoop|Ribbon|all (default all: one fold per
    apparatus), target=total|difficulty|execution (default total); any case."""
    apparatus, target = options.apparatus, options.target
    names = APPARATUS if apparatus == "all" else (apparatus,)
    rows, folds, class_id = [], [], []
    for name in names:
        part = read_rg(path, name, target)
        start = len(rows)
        train = [start + i for i, r in enumerate(part) if r[2] == "train"]
        test = [start + i for i, r in enumerate(part) if r[2] == "test"]
        fold_name = part[0][0].split("_")[0] if len(names) > 1 else "split"
        folds.append(Fold(fold_name, np.array(train, np.int64), np.array(test, np.int64)))
        class_id += [APPARATUS.index(part[0][0].split("_")[0])] * len(part)
        rows += part
    ids = [r[0] for r in rows]
    score = np.array([r[1] for r in rows], dtype=np.float64)
    check_finite(score, ids, f"{path}: {target}")
    return LabelSet(
        name="rg",
        source=str(path),
        video_ids=ids,
        score=score,
        folds=folds,
        class_id=np.array(class_id, dtype=np.int64),
        class_names=list(APPARATUS),
    )
