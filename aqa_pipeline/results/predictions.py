"""The predictions table (predictions.csv): one row per (fold, protocol, seed, test video).

Columns: video_id, true, pred, sigma (empty when the head has none), split, seed,
protocol (final | val | best_on_test), fold, epoch (the selected epoch, from 0).
Scores are in dataset units. The ridge baseline's predictions of the same test videos have
the same columns in baseline.csv (protocol `baseline`, seed BASELINE_SEED, epoch -1).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from aqa_pipeline.errors import AqaError

COLUMNS = ("video_id", "true", "pred", "sigma", "split", "seed", "protocol", "fold", "epoch")
PROTOCOLS = ("final", "val", "best_on_test")
BASELINE = "baseline"  # the protocol name of the baseline's rows
BASELINE_SEED = -1  # ... and their seed (deterministic: one "seed")


@dataclass
class Predictions:
    """Column arrays of equal length."""

    video_id: list[str] = field(default_factory=list)
    true: list[float] = field(default_factory=list)
    pred: list[float] = field(default_factory=list)
    sigma: list[float] = field(default_factory=list)  # NaN when the head has none
    split: list[str] = field(default_factory=list)
    seed: list[int] = field(default_factory=list)
    protocol: list[str] = field(default_factory=list)
    fold: list[str] = field(default_factory=list)
    epoch: list[int] = field(default_factory=list)

    def add(
        self,
        *,
        video_ids: list[str],
        true: np.ndarray,
        pred: np.ndarray,
        sigma: np.ndarray | None,
        seed: int,
        protocol: str,
        fold: str,
        epoch: int,
        split: str = "test",
    ) -> None:
        n = len(video_ids)
        self.video_id += list(video_ids)
        self.true += [float(v) for v in true]
        self.pred += [float(v) for v in pred]
        self.sigma += [float(v) for v in sigma] if sigma is not None else [math.nan] * n
        self.split += [split] * n
        self.seed += [int(seed)] * n
        self.protocol += [protocol] * n
        self.fold += [fold] * n
        self.epoch += [int(epoch)] * n

    def extend(self, other: Predictions) -> None:
        """Append the rows of `other` (e.g. the next fold's)."""
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))

    def __len__(self) -> int:
        return len(self.video_id)

    def select(self, protocol: str, fold: str, seed: int) -> dict[str, np.ndarray]:
        """Rows of one (protocol, fold, seed) as arrays: video_id, true, pred, sigma, epoch."""
        idx = [
            i
            for i in range(len(self))
            if self.protocol[i] == protocol and self.fold[i] == fold and self.seed[i] == seed
        ]
        return {
            "video_id": np.array([self.video_id[i] for i in idx]),
            "true": np.array([self.true[i] for i in idx]),
            "pred": np.array([self.pred[i] for i in idx]),
            "sigma": np.array([self.sigma[i] for i in idx]),
            "epoch": np.array([self.epoch[i] for i in idx]),
        }

    def keys(self) -> tuple[list[str], list[str], list[int]]:
        """Protocols, folds and seeds present, in first-seen order."""
        return (
            list(dict.fromkeys(self.protocol)),
            list(dict.fromkeys(self.fold)),
            list(dict.fromkeys(self.seed)),
        )

    @property
    def has_sigma(self) -> bool:
        return any(not math.isnan(s) for s in self.sigma)

    def write(self, path: Path) -> None:
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            for i in range(len(self)):
                sigma = "" if math.isnan(self.sigma[i]) else repr(self.sigma[i])
                w.writerow(
                    [
                        self.video_id[i],
                        repr(self.true[i]),
                        repr(self.pred[i]),
                        sigma,
                        self.split[i],
                        self.seed[i],
                        self.protocol[i],
                        self.fold[i],
                        self.epoch[i],
                    ]
                )

    @classmethod
    def read(cls, path: Path) -> Predictions:
        if not path.is_file():
            raise AqaError(f"{path}: no predictions file (was the run finished?)")
        out = cls()
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise AqaError(f"{path}: missing column(s) {sorted(missing)}")
            for row in reader:
                out.video_id.append(row["video_id"])
                out.true.append(float(row["true"]))
                out.pred.append(float(row["pred"]))
                out.sigma.append(float(row["sigma"]) if row["sigma"] else math.nan)
                out.split.append(row["split"])
                out.seed.append(int(row["seed"]))
                out.protocol.append(row["protocol"])
                out.fold.append(row["fold"])
                out.epoch.append(int(row["epoch"]))
        return out
