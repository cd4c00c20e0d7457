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


def partial_dir(run_dir: Path) -> Path:
    """The temporary sibling a run writes into until it completes (RUN_DIR -> .RUN_DIR.partial);
    it is renamed to RUN_DIR at the end, so RUN_DIR only ever holds a finished run."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.partial"


def checkpoint_dir(run_dir: Path) -> Path:
    """Where the run for `run_dir` keeps its checkpoints while training (in its partial dir)."""
    return partial_dir(run_dir) / "checkpoints"


def was_interrupted(run_dir: Path) -> bool:
    """True when the run for run_dir left checkpoints: an earlier attempt did not complete."""
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
