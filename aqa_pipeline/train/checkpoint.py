"""Training checkpoints: the state of one run (one fold's validation or full run) mid-way,
so a killed `aqa train` continues where it stopped (`aqa train --resume`).

A checkpoint holds the group's training state (weights, optimiser, schedule, RNG states),
the batch-order and augmentation generators, and everything recorded per epoch so far. It
is written atomically (a temporary file, then a rename), so a kill while writing leaves the
previous checkpoint intact. The files are pickles written by this tool for itself: only
resume run directories you made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from aqa_pipeline.errors import AqaError


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run directory keeps its checkpoints while training."""
    return Path(run_dir) / "checkpoints"


def was_interrupted(run_dir: Path) -> bool:
    """True when run_dir holds checkpoints: an earlier attempt did not complete."""
    return checkpoint_dir(run_dir).is_dir()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise AqaError(
            f"{path}: not a readable training checkpoint ({exc}); delete it to train that "
            "run again from its start (the other checkpoints are kept)"
        ) from exc
