"""Clip sampling recipes: exact indices of each shipped recipe."""

from __future__ import annotations

import numpy as np
import pytest

from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.extract.sampling import TooShortError, plan_clips, resampled_indices


def recipe(name: str) -> dict:
    """The shipped recipe's sampling section as written (a dict, for variations)."""
    return load_recipe(name).sampling.model_dump(exclude_unset=True)


def test_musdl_recipe_103_frames():
    plan = plan_clips(recipe("i3d_musdl"), 103)
    assert plan.shape == (10, 16)
    assert plan[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 87]
    assert plan[-1].tolist() == list(range(87, 103))
    assert all(np.array_equal(row, np.arange(row[0], row[0] + 16)) for row in plan)


def test_musdl_recipe_longer_video_takes_the_first_103():
    assert plan_clips(recipe("i3d_musdl"), 150).max() == 102


def test_core_recipe_anchors_at_the_end():
    plan = plan_clips(recipe("i3d_core"), 103)
    assert plan[:, 0].tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 86]
    assert plan[-1, -1] == 101  # CoRe's last clip stops one frame short of the window's end
    longer = plan_clips(recipe("i3d_core"), 120)  # the 103 frames ending at the last frame
    assert longer[0, 0] == 17 and longer.max() == 17 + 101


def test_jigsaws_linspace_160():
    plan = plan_clips(recipe("i3d_jigsaws"), 2000)
    assert plan.shape == (10, 16)
    flat = plan.ravel()
    assert flat[0] == 0 and flat[-1] == 1999
    assert np.array_equal(flat, np.linspace(0, 1999, 160).astype(int))
    assert np.all(np.diff(flat) > 0)


def test_gdlt_consecutive_25fps_trimmed_evenly():
    cfg = recipe("swin_b_gdlt")
    plan = plan_clips(cfg, 100 * 32 + 10, fps=25.0)  # remainder 10 -> 5 at each end
    assert plan.shape == (100, 32)
    assert plan[0, 0] == 5 and plan[-1, -1] == 100 * 32 + 4
    assert np.all(np.diff(plan.ravel()) == 1)


def test_gdlt_resamples_50fps_to_25():
    plan = plan_clips(recipe("swin_b_gdlt"), 640, fps=50.0)  # 320 frames at 25 fps = 10 clips
    assert plan.shape == (10, 32)
    assert np.all(np.diff(plan.ravel()) == 2)


def test_resampled_indices_30_to_25():
    idx = resampled_indices(30, 30.0, 25.0)
    assert len(idx) == 25 and idx[0] == 0 and idx[-1] == 28
    assert set(np.diff(idx)) <= {1, 2}


def test_too_short_is_an_error_unless_padding():
    with pytest.raises(TooShortError, match="needs 103 frames.*has 90"):
        plan_clips(recipe("i3d_musdl"), 90)
    padded = plan_clips({**recipe("i3d_musdl"), "pad": "repeat_last"}, 90)
    assert padded.max() == 89 and padded.shape == (10, 16)
    with pytest.raises(TooShortError):
        plan_clips(recipe("swin_b_gdlt"), 20, fps=25.0)
    with pytest.raises(TooShortError):
        plan_clips(recipe("i3d_jigsaws"), 100)


def test_sampling_is_deterministic():
    cfg = recipe("swin_b_gdlt")
    assert np.array_equal(plan_clips(cfg, 5000, 29.97), plan_clips(cfg, 5000, 29.97))
