"""Shared fixtures: the optional ../shared data folder, tiny videos and a fast recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aqa_pipeline.synthetic import moving_square, write_video

SHARED = Path(__file__).resolve().parents[2] / "shared"

# a tiny Video Swin with seeded random weights: fast enough for end-to-end tests on CPU
TINY_SWIN = {
    "embed_dim": 16,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 1, 2, 2],
    "window_size": [4, 4, 4],
    "patch_size": [2, 4, 4],
}


def needs_shared(*parts: str) -> Path:
    """The path under ../shared, or skip the test when the folder is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (the project's shared data folder is absent)")
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path):
    """Write a fast extract config: 8-frame consecutive clips at 32x32, tiny Swin."""

    def make(**sampling) -> Path:
        cfg = {
            "name": "tiny",
            "backbone": {"name": "swin3d", "arch": TINY_SWIN},
            "sampling": {"method": "consecutive", "clip_len": 8, **sampling},
            "preprocess": {"resize": [32, 32], "normalize": "imagenet"},
        }
        path = tmp_path / f"tiny_{len(list(tmp_path.glob('tiny_*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


@pytest.fixture
def make_video(tmp_path: Path):
    def make(rel: str, n_frames: int = 24, codec: str = "libx264", speed: float = 2.0, seed: int = 0,
             size: tuple[int, int] = (48, 64), fps: int = 25) -> Path:  # fmt: skip
        return write_video(tmp_path / rel, moving_square(n_frames, size, speed, seed), fps, codec)

    return make
