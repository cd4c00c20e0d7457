"""Head inputs for a block of rows (S seeds x B videos), built by indexing in-memory tensors.

- `VideoInputs`: x (S, B, D) per-video means.
- `ClipInputs`: x (S, B, T, D), mask (S, B, T) True = real clip, clip_index (S, B, T)
  (position of the clip in its video, -1 for padding). Training: data.train_crop "random"
  crops videos longer than data.clip_num at a random start and zero-pads shorter ones to
  clip_num (data.crop_starts "authors": never at the last start, as their loaders); "none"
  pads to the longest in the batch. Testing: data.test_crop "full" scores
  whole videos (padded to the longest in the batch); "crop" crops/pads to clip_num at a
  random start like the authors' InterAQA code (seeded, so repeatable).
- `PairInputs`: x (S, B, M, 2D + 2) for the contrastive heads: each video with M exemplars
  of its class from the run's training rows (M = 1 in training, a different random
  exemplar each step, never the video itself when its class has another; M =
  data.exemplars at test, drawn once per seed and kept for every epoch).

Feature standardisation (data.standardize) uses the mean and std of the fold's training
rows (`FeatureNorm`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from aqa_pipeline.train.data import TrainData, take_rows


@dataclass
class FeatureNorm:
    """Per-dimension mean and std (D,) of the training features."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, data: TrainData, train_rows: np.ndarray, clips: bool) -> FeatureNorm:
        """From the video means of `train_rows`, or from all their clips with clips=True."""
        if clips:
            assert data.clip_start is not None and data.clip_count is not None
            assert data.clip_features is not None
            idx = torch.cat([
                torch.arange(int(data.clip_start[r]), int(data.clip_start[r] + data.clip_count[r]))
                for r in train_rows
            ])  # fmt: skip
            x = data.clip_features[idx.to(data.clip_features.device)]
        else:
            x = data.video[torch.as_tensor(train_rows, device=data.video.device)]
        return cls(x.mean(0), x.std(0).clamp_min(1e-6))

    def apply(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class VideoInputs:
    kind = "video"

    def __init__(self, data: TrainData, norm: FeatureNorm | None = None):
        self.x = norm.apply(data.video) if norm else data.video

    def make(self, rows: Tensor, train: bool, rngs: list[np.random.Generator]) -> dict[str, Tensor]:
        return {"x": take_rows(self.x, rows)}


class ClipInputs:
    kind = "clips"

    def __init__(
        self,
        data: TrainData,
        clip_num: int | None,
        train_crop: str,
        test_crop: str,
        norm: FeatureNorm | None = None,
        crop_starts: str = "all",
    ):
        assert data.clip_features is not None and data.clip_start is not None
        self.data = data
        self.feats = data.clip_features
        self.pad = self.feats.shape[0] - 1
        self.clip_num = int(clip_num) if clip_num else None
        self.train_crop, self.test_crop = train_crop, test_crop
        self.norm = norm
        # "authors": the last start is never drawn (their randint(0, T - clip_num))
        self.last_start = 0 if crop_starts == "authors" else 1

    def make(self, rows: Tensor, train: bool, rngs: list[np.random.Generator]) -> dict[str, Tensor]:
        data = self.data
        counts = data.clip_count[rows.cpu()].numpy()  # (S, B)
        crop = self.clip_num is not None and (
            (train and self.train_crop == "random") or (not train and self.test_crop == "crop")
        )
        if crop:
            length = np.minimum(counts, self.clip_num)
            u = np.stack([g.random(counts.shape[1]) for g in rngs])  # each seed its own draws
            starts = np.where(counts > length, counts - length + self.last_start, 1)
            offset = (u * starts).astype(np.int64)
            t = self.clip_num
        else:
            length, offset, t = counts, np.zeros_like(counts), int(counts.max())
        pos = offset[..., None] + np.arange(t)  # (S, B, T) position in the video
        real = np.arange(t) < length[..., None]
        start = data.clip_start[rows.cpu()].numpy()[..., None]
        idx = torch.from_numpy(np.where(real, start + pos, self.pad)).to(self.feats.device)
        x = take_rows(self.feats, idx)
        mask = torch.from_numpy(real).to(self.feats.device)
        if self.norm is not None:
            x = self.norm.apply(x) * mask[..., None]
        return {"x": x, "mask": mask, "clip_index": torch.from_numpy(np.where(real, pos, -1))}


class PairInputs:
    kind = "pairs"

    def __init__(
        self,
        data: TrainData,
        pools: list[np.ndarray],
        exemplars: int,
        norm: FeatureNorm | None = None,
    ):
        self.x = norm.apply(data.video) if norm else data.video
        self.target = data.fields["target"]
        self.dd = data.fields.get("difficulty", torch.ones_like(self.target))
        self.m = int(exemplars)
        cls = data.labels.class_id
        self.classes = np.zeros(data.labels.n, np.int64) if cls is None else np.asarray(cls)
        self.pools = [self._index_pool(np.asarray(p)) for p in pools]
        self.voters: list[dict[int, np.ndarray]] = [{} for _ in pools]

    def _index_pool(self, pool: np.ndarray) -> dict[str, np.ndarray]:
        order = np.argsort(self.classes[pool], kind="stable")
        pool = pool[order]
        cls = self.classes[pool]
        n_cls = int(self.classes.max()) + 1
        start = np.searchsorted(cls, np.arange(n_cls))
        count = np.searchsorted(cls, np.arange(n_cls), side="right") - start
        return {"rows": pool, "start": start, "count": count}

    def _candidates(self, s: int, row: int) -> np.ndarray:
        p = self.pools[s]
        c = self.classes[row]
        same = p["rows"][p["start"][c] : p["start"][c] + p["count"][c]]
        others = same[same != row]
        if len(others):
            return others
        rest = p["rows"][p["rows"] != row]
        return rest if len(rest) else p["rows"]

    def _train_exemplars(self, rows: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        out = np.empty(rows.shape + (1,), dtype=np.int64)
        for s in range(rows.shape[0]):
            for b, r in enumerate(rows[s]):
                cand = self._candidates(s, int(r))
                out[s, b, 0] = cand[rngs[s].integers(len(cand))]
        return out

    def _eval_exemplars(self, rows: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        out = np.empty(rows.shape + (self.m,), dtype=np.int64)
        for s in range(rows.shape[0]):
            cache, rng = self.voters[s], rngs[s]
            for b, r in enumerate(rows[s]):
                r = int(r)
                if r not in cache:
                    cand = self._candidates(s, r)
                    cache[r] = rng.choice(cand, size=self.m, replace=len(cand) < self.m)
                out[s, b] = cache[r]
        return out

    def make(self, rows: Tensor, train: bool, rngs: list[np.random.Generator]) -> dict[str, Tensor]:
        r = rows.cpu().numpy()
        ex = self._train_exemplars(r, rngs) if train else self._eval_exemplars(r, rngs)
        ex = torch.from_numpy(ex).to(self.x.device)
        q = take_rows(self.x, rows)[:, :, None, :].expand(-1, -1, ex.shape[-1], -1)
        x = torch.cat(
            [
                q,
                take_rows(self.x, ex),
                take_rows(self.target, ex)[..., None],
                take_rows(self.dd, ex)[..., None],
            ],
            dim=-1,
        )
        return {"x": x}
