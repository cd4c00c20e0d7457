"""The batch engine: normalisation, out-of-memory retry with smaller batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.engine import ClipEngine, resolve_amp, resolve_device
from aqa_pipeline.extract.normalisation import PRESETS
from aqa_pipeline.extract.preprocess import Preprocess, normalize_clips


class MeanBackbone(nn.Module):
    """forward_features = per-channel mean; raises CUDA-style OOM above `limit` clips."""

    feature_dim = 3

    def __init__(self, limit: int | None = None):
        super().__init__()
        self.limit = limit
        self.calls: list[int] = []

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        if self.limit is not None and len(x) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.mean(dim=(2, 3, 4))


def clips(n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 4, 6, 6, 3), generator=g, dtype=torch.uint8)


def test_normalisation_presets():
    x = torch.full((1, 2, 2, 2, 3), 255, dtype=torch.uint8)
    out = normalize_clips(x, "minus1_1")
    assert out.shape == (1, 3, 2, 2, 2) and torch.allclose(out, torch.ones_like(out))
    mean, std = PRESETS["imagenet"]
    out = normalize_clips(torch.zeros_like(x), "imagenet")
    assert out[0, 0, 0, 0, 0].item() == pytest.approx(-mean[0] / std[0], rel=1e-5)


def test_oom_retries_with_half_the_batch():
    expected = ClipEngine(MeanBackbone(), torch.device("cpu"), "imagenet").features(clips())
    backbone = MeanBackbone(limit=2)
    engine = ClipEngine(backbone, torch.device("cpu"), "imagenet")
    out = engine.features(clips())
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert engine.max_batch == 2
    assert backbone.calls[:3] == [8, 4, 2]  # halved until it fits, then kept small
    backbone.calls.clear()
    engine.features(clips())
    assert backbone.calls == [2, 2, 2, 2]


def test_oom_at_batch_one_is_raised():
    engine = ClipEngine(MeanBackbone(limit=0), torch.device("cpu"), "imagenet")
    with pytest.raises(torch.OutOfMemoryError):
        engine.features(clips(2))


def test_device_and_amp_resolution():
    assert resolve_amp("auto", torch.device("cpu")) == "none"
    assert resolve_amp("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(AqaError):
        resolve_amp("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(AqaError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bf16_autocast_path_runs_on_cpu():
    engine = ClipEngine(MeanBackbone(), torch.device("cpu"), "imagenet", amp="bf16")
    out = engine.features(clips(2))
    ref = ClipEngine(MeanBackbone(), torch.device("cpu"), "imagenet").features(clips(2))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=2e-2)


def test_preprocess_geometry():
    from PIL import Image

    img = Image.fromarray(np.zeros((480, 640, 3), dtype=np.uint8))
    assert Preprocess.from_config({"resize": [455, 256], "crop": [224, 224]})(img).shape == (
        224,
        224,
        3,
    )
    gdlt = Preprocess.from_config({"short_side": 256, "crop": [224, 300], "squash": [224, 224]})
    assert gdlt(img).shape == (224, 224, 3)
    with pytest.raises(AqaError, match="unknown key preprocess.rezise"):
        Preprocess.from_config({"rezise": [1, 2]})
    with pytest.raises(ValueError, match="smaller than"):
        Preprocess.from_config({"crop": [500, 500]})(img)
