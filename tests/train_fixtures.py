"""Small synthetic caches, labels and configs shared by the stage-2 tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aqa_pipeline.features import FeatureSet, VideoRecord, write_features
from aqa_pipeline.train.heads import register_head
from aqa_pipeline.train.heads.base import Head

FAST = {"threads": 1}


def make_cache(
    path: Path,
    n: int = 40,
    dim: int = 8,
    seed: int = 0,
    key_fields: dict | None = None,
    clips: tuple[int, int] = (1, 1),
) -> tuple[Path, np.ndarray]:
    """A cache of n videos v000.. whose mean feature's first dim carries the score.

    Returns (path, scores). clips = (min, max) clips per video, 16 frames each."""
    rng = np.random.default_rng(seed)
    recs, scores = [], []
    for i in range(n):
        t = int(rng.integers(clips[0], clips[1] + 1))
        feats = rng.normal(size=(t, dim)).astype(np.float32)
        scores.append(float(50 + 10 * feats.mean(0)[0] + rng.normal(scale=0.5)))
        frames = np.stack([np.arange(t) * 16, np.arange(t) * 16 + 16], axis=1)
        recs.append(
            VideoRecord(video_id=f"v{i:03d}", clip_features=feats, clip_frames=frames, fps=25.0)
        )
    fs = FeatureSet.from_records(recs, dim, key_fields=key_fields or {"backbone": {"name": "toy"}})
    write_features(path, fs)
    return path, np.array(scores)


def write_labels(
    path: Path, scores: np.ndarray, split: list[str] | None = None, **extra: Any
) -> Path:
    """video_id,score,split[,extra columns] with every 4th video in test by default."""
    split = split or ["test" if i % 4 == 0 else "train" for i in range(len(scores))]
    cols = ["video_id", "score", "split", *extra]
    lines = [",".join(cols)]
    for i, s in enumerate(scores):
        vals = [f"v{i:03d}", repr(float(s)), split[i], *(str(v[i]) for v in extra.values())]
        lines.append(",".join(vals))
    path.write_text("\n".join(lines) + "\n")
    return path


def config(name: str = "dae", epochs: int = 4, **sections: Any) -> dict[str, Any]:
    """A fast train config for head `name`; keyword sections are merged in."""
    cfg: dict[str, Any] = {
        "head": {"name": name},
        "label": {"scale": 100},
        "optim": {"name": "adam", "lr": 1e-2},
        "train": {"epochs": epochs, "batch_size": 8, **FAST},
        "eval": {"val_fraction": 0.25, "bootstrap": 200},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


@register_head("clip_attention_test")
class ClipAttentionTest(Head):
    """A tiny clip-sequence head for tests: per-clip score and softmax weight."""

    input_kind = "clips"

    def __init__(self, in_dim: int, options=None, **kw):
        super().__init__()
        self.opts = self.options(options, **kw)
        self.score = nn.Linear(in_dim, 1)
        self.weight = nn.Linear(in_dim, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
        s = self.score(x).squeeze(-1)
        logits = self.weight(x).squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        w = torch.softmax(logits, dim=-1)
        return {"score": (w * s).sum(-1), "clip_scores": s, "clip_weights": w}

    def loss(self, out: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        return (out["score"] - batch["target"]).square().mean()
