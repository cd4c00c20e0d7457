"""The fast preprocessing paths against the PIL reference: pixels within 1 grey level on real
and synthetic frames, features within cos 0.9999 through the parity-fixture I3D and Video
Swin on real clips, and `--preprocess-device` (run here on the CPU, the code path CUDA runs).
Real data and fixtures come from ../shared; those tests skip without it."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from aqa_pipeline.cli import main
from aqa_pipeline.extract.engine import ClipEngine
from aqa_pipeline.extract.normalisation import PRESETS
from aqa_pipeline.extract.preprocess import Preprocess, normalize_clips, preprocess_clips
from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.features import read_features
from aqa_pipeline.synthetic import moving_square

from .conftest import needs_shared

RECIPES = ("swin_b_gdlt", "i3d_jigsaws", "i3d_musdl")


def real_frames() -> list[np.ndarray]:
    """Every 30th frame of each shared video, (H, W, 3) uint8 at native size."""
    return _real_frames(needs_shared("data", "videos"), 30)


@functools.lru_cache(maxsize=1)
def _real_frames(folder: Path, every: int) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob("*.mp4")):
        with av.open(str(path)) as container:
            out += [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
                    if i % every == 0]  # fmt: skip
    return out


def synthetic_frames() -> list[np.ndarray]:
    return list(moving_square(6, (480, 640), 40.0, seed=3)) + list(moving_square(3, (272, 640)))


def max_diffs(frames: list[np.ndarray], pre: Preprocess) -> tuple[int, int]:
    """Max abs difference from the PIL path: (workers path, device path on the CPU)."""
    fast = device = 0
    for frame in frames:
        ref = pre(Image.fromarray(frame)).astype(int)
        got = pre.frame(frame)
        assert got.shape == ref.shape and got.dtype == np.uint8
        fast = max(fast, int(np.abs(got - ref).max()))
        clip = torch.from_numpy(frame)[None, None]  # (1, 1, H, W, 3)
        dev = preprocess_clips(clip, pre)[0, 0].numpy()
        assert dev.shape == ref.shape and dev.dtype == np.uint8
        device = max(device, int(np.abs(dev - ref).max()))
    return fast, device


@pytest.mark.parametrize("recipe", RECIPES)
def test_fast_paths_within_one_grey_level_on_synthetic_frames(recipe):
    pre = load_recipe(recipe).preprocess
    assert max_diffs(synthetic_frames(), pre) <= (1, 1)


@pytest.mark.parametrize("recipe", RECIPES)
def test_fast_paths_within_one_grey_level_on_real_frames(recipe):
    frames = real_frames()
    pre = load_recipe(recipe).preprocess
    fast, device = max_diffs(frames, pre)
    assert fast <= 1 and device <= 1
    # and not trivially: some values do differ by one (PIL's fixed point vs torch's)
    some = frames[0]
    assert (pre(Image.fromarray(some)).astype(int) != pre.frame(some)).any()


def test_geometry_errors_and_sizes():
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    pre = Preprocess.from_config({"crop": [500, 500]})
    with pytest.raises(ValueError, match="smaller than the 500x500 crop"):
        pre.frame(frame)
    with pytest.raises(ValueError, match="smaller than"):
        preprocess_clips(torch.from_numpy(frame)[None, None], pre)
    g = load_recipe("swin_b_gdlt").preprocess.geometry(480, 640)
    assert (g.resize, g.crop, g.squash, g.out) == ((256, 341), (16, 20, 224, 300), (224, 224),
                                                   (224, 224))  # fmt: skip
    none = Preprocess.from_config({})
    assert none.frame(frame) is frame
    assert preprocess_clips(torch.from_numpy(frame)[None, None], none).shape == (1, 1, 480, 640, 3)


# ---------------------------------------------------------------- features, parity fixtures

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "backbones"


def real_clip(pre: Preprocess, start: int = 100, length: int = 16):
    """A real 16-frame clip of box.mp4 three ways: PIL path, workers path, device path,
    each (T, h, w, 3) uint8."""
    path = needs_shared("data", "videos", "box.mp4")
    with av.open(str(path)) as container:
        native = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
                  if start <= i < start + length]  # fmt: skip
    pil = np.stack([pre(Image.fromarray(f)) for f in native])
    fast = np.stack([pre.frame(f) for f in native])
    device = preprocess_clips(torch.from_numpy(np.stack(native))[None], pre)[0].numpy()
    return pil, fast, device


def cosines(model: nn.Module, clips: list[np.ndarray], preset: str) -> list[float]:
    """Cosine similarity of the features of clips[1:] with those of clips[0]."""
    x = normalize_clips(torch.from_numpy(np.stack(clips)), preset)
    with torch.inference_mode():
        f = model.forward_features(x)
    return [float(torch.nn.functional.cosine_similarity(f[0], g, dim=0)) for g in f[1:]]


def test_i3d_features_of_fast_paths_match_the_pil_path():
    from aqa_pipeline.extract.backbones import build

    weights = needs_shared("fixtures", "backbones", "i3d_piergiaj_rgb400.pt")
    model = build("i3d", weights).eval()
    pre = load_recipe("i3d_jigsaws").preprocess
    pil, fast, device = real_clip(pre)
    assert pil.shape == (16, 224, 224, 3)
    assert np.abs(fast.astype(int) - pil).max() <= 1 and (fast != pil).any()
    assert min(cosines(model, [pil, fast, device], "minus1_1")) >= 0.9999


def test_swin_features_of_fast_paths_match_the_pil_path():
    from aqa_pipeline.extract.backbones import build

    weights = needs_shared("fixtures", "backbones", "videoswin_mmaction_tiny.pth")
    config = torch.load(weights, weights_only=True)["meta"]["config"]
    model = build("swin3d", weights, **{k: v for k, v in config.items() if k != "drop_path_rate"})
    pre = load_recipe("swin_b_gdlt").preprocess
    pil, fast, _ = real_clip(pre)
    assert pil.shape == (16, 224, 224, 3)
    assert min(cosines(model.eval(), [pil, fast], "imagenet")) >= 0.9999


# ---------------------------------------------------------------- --preprocess-device


class Flatten(nn.Module):
    """forward_features = the normalised clip itself, flattened: (B, 3, T, H, W) -> (B, N)."""

    feature_dim = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_engine_device_path_equals_the_workers_path_on_cpu():
    frames = synthetic_frames()[:4]
    pre = load_recipe("swin_b_gdlt").preprocess
    native = torch.from_numpy(np.stack(frames))[None]  # (1, 4, 480, 640, 3)
    workers = torch.from_numpy(np.stack([pre.frame(f) for f in frames]))[None]
    cpu = torch.device("cpu")
    ref = ClipEngine(Flatten(), cpu, "imagenet").features(workers)
    engine = ClipEngine(Flatten(), cpu, "imagenet", preprocess=pre, preprocess_device=cpu)
    got = engine.features(torch.cat([native, native]))
    assert got.shape == (2, ref.shape[1])
    one_level = 1 / (255 * min(PRESETS["imagenet"][1]))
    assert np.abs(got - ref).max() <= one_level * 1.0001
    np.testing.assert_array_equal(got[0], got[1])


def test_preprocess_device_cpu_end_to_end_and_same_cache_key(tmp_path, make_video, tiny_recipe):
    make_video("v/a.mp4", 24, size=(96, 128))
    make_video("v/b.mp4", 16, size=(64, 96), seed=1)  # another size: a batch of its own
    make_video("w/c.mp4", 16, size=(96, 128), seed=2)
    config = tiny_recipe()

    def run(inp, out, *extra):
        return CliRunner().invoke(main, ["extract", "--config", str(config), "--input", str(inp),
                                         "--output", str(out), "--random-init", "--workers", "1",
                                         "--batch-size", "4", *extra])  # fmt: skip

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert run(tmp_path / "v", a).exit_code == 0
    res = run(tmp_path / "v", b, "--preprocess-device", "cpu")
    assert res.exit_code == 0, res.output
    fa, fb = read_features(a), read_features(b)
    assert fa.cache_key == fb.cache_key  # provenance tells them apart, the key does not
    np.testing.assert_allclose(fa.clip_features, fb.clip_features, atol=0.05)
    assert fa.provenance["runs"][-1]["resize_impl"] == "torch-uint8-antialias"
    run_b = fb.provenance["runs"][-1]
    assert run_b["resize_impl"] == "torch-float32-antialias-round"
    assert run_b["preprocess_device"] == "cpu" and run_b["decoder"] == "pyav"
    # a cache made one way resumes the other way (same key), and says so per run
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"video_id,path\na,{tmp_path}/v/a.mp4\nb,{tmp_path}/v/b.mp4\n"
                        f"c,{tmp_path}/w/c.mp4\n")  # fmt: skip
    res = run(manifest, a, "--preprocess-device", "cpu")
    assert res.exit_code == 0 and "1 extracted, 2 already done" in res.output, res.output
    runs = json.loads(json.dumps(read_features(a).provenance["runs"]))
    assert [r["preprocess_device"] for r in runs] == ["workers", "cpu"]
