"""MTL-AQA annotations -> an extraction manifest for `aqa extract --input manifest.csv`.

The manifest has one row per dive: `video_id,path,start_frame,end_frame`, video ids
`{event:02d}_{clip:02d}` (what the mtl_aqa labels adapter expects). Two source layouts:

- `dives`: one frame folder per dive, ROOT/{event:02d}_{clip:02d}/*.jpg (MUSDL's and
  DAE's prepared frames). The folder is the dive, so start_frame/end_frame stay empty.
- `events`: one source per event, ROOT/{event:02d}{ext}: the event's video (ext .mp4) or
  its whole frame folder (ext ""), trimmed to the annotation's start_frame/end_frame,
  copied verbatim from the annotations.

Usage: aqa manifest mtl-aqa --annotations DIR --root ROOT
       [--layout dives|events] [--ext .mp4] [--split 0] -o manifest.csv
"""

from __future__ import annotations

import csv
from pathlib import Path

from aqa_pipeline.datasets.mtl_aqa import DEFAULT_ID, annotation_table, read_split, video_id
from aqa_pipeline.errors import AqaError

LAYOUTS = ("dives", "events")
COLUMNS = ("video_id", "path", "start_frame", "end_frame")


def mtl_aqa_manifest(
    annotations: str | Path,
    root: str | Path,
    out: str | Path,
    layout: str = "dives",
    ext: str = "",
    split: str | None = None,
) -> int:
    """Write the manifest CSV; returns the number of dives. `split` keeps only the dives of
    train/test_split_{split}.pkl (default: every annotated dive)."""
    if layout not in LAYOUTS:
        raise AqaError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    folder, root, out = Path(annotations), Path(root), Path(out)
    table = annotation_table(folder)
    keys = sorted(table)
    if split is not None:
        wanted = set(read_split(folder / f"train_split_{split}.pkl"))
        wanted |= set(read_split(folder / f"test_split_{split}.pkl"))
        keys = [k for k in keys if k in wanted]
    rows = []
    for key in keys:
        vid = video_id(key, DEFAULT_ID)
        if layout == "dives":
            rows.append((vid, str(root / vid), "", ""))
            continue
        ann = table[key]
        if "start_frame" not in ann or "end_frame" not in ann:
            raise AqaError(f"{folder}: dive {vid} has no start_frame/end_frame")
        start, end = int(ann["start_frame"]), int(ann["end_frame"])
        if end <= start:
            raise AqaError(f"{folder}: dive {vid} has end_frame {end} <= start_frame {start}")
        rows.append((vid, str(root / f"{key[0]:02d}{ext}"), str(start), str(end)))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return len(rows)
