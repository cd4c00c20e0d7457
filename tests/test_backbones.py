"""Backbones: parity with the reference implementations, checkpoint layouts, seeding, errors.

The parity tests read golden fixtures from ../shared/fixtures/backbones and skip without them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.backbones import build, get_spec, list_backbones
from aqa_pipeline.extract.backbones.i3d import hassony2_to_piergiaj

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "backbones"
TINY_SWIN = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=(2, 3, 3))


@pytest.fixture(scope="module")
def fixtures() -> dict:
    if not (FIXTURES / "fixtures.json").is_file():
        pytest.skip(f"golden backbone fixtures not found in {FIXTURES}")
    return json.loads((FIXTURES / "fixtures.json").read_text())


@pytest.fixture(scope="module")
def clip(fixtures: dict) -> torch.Tensor:
    return torch.load(FIXTURES / "clip.pt", weights_only=True).float()


@pytest.fixture(scope="module")
def random_i3d() -> torch.nn.Module:
    return build("i3d", random_init=True)


@pytest.fixture(scope="module")
def random_r50() -> torch.nn.Module:
    return build("i3d_r50", random_init=True)


def expected(name: str) -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / name, weights_only=True)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --- parity with the reference implementations -----------------------------------------------


@torch.no_grad()
def test_i3d_piergiaj_parity(fixtures: dict, clip: torch.Tensor) -> None:
    path = FIXTURES / "i3d_piergiaj_rgb400.pt"
    model = build("i3d", path)
    assert model.weights_info["layout"] == "piergiaj"
    assert model.weights_info["sha256"] == fixtures["i3d_piergiaj_rgb400.pt"]["sha256"]
    want = expected("i3d_piergiaj_expected.pt")
    features = model.forward_features(clip)
    assert max_err(features, want["features"]) < 1e-4
    # The reference's logits are per time step, (B, 400, T'); the 1x1x1 logits conv is linear,
    # so their mean over T' is the conv applied to the features.
    conv = model.logits.conv3d
    logits = torch.nn.functional.linear(features, conv.weight.flatten(1), conv.bias)
    assert max_err(logits, want["logits"].mean(dim=2)) < 1e-4


@torch.no_grad()
def test_i3d_hassony2_parity(fixtures: dict, clip: torch.Tensor, tmp_path: Path) -> None:
    key_map = json.loads((FIXTURES / "hassony2_keys.json").read_text())
    piergiaj = torch.load(FIXTURES / "i3d_piergiaj_rgb400.pt", weights_only=True)
    path = tmp_path / "model_rgb.pth"
    torch.save({k: piergiaj[v] for k, v in key_map.items()}, path)

    model = build("i3d", path)
    assert model.weights_info["layout"] == "hassony2"
    assert model.arch == {"numerics": "hassony2"}
    # Run in channels_last_3d memory format, as a caller may on GPU: same numbers.
    model = model.to(memory_format=torch.channels_last_3d)
    features = model.forward_features(clip.contiguous(memory_format=torch.channels_last_3d))
    assert features.shape == (1, model.feature_dim)
    assert max_err(features, expected("i3d_hassony2_expected.pt")["features"]) < 1e-4


def test_hassony2_key_renaming_matches_the_reference_map(fixtures: dict) -> None:
    key_map = json.loads((FIXTURES / "hassony2_keys.json").read_text())
    renamed = hassony2_to_piergiaj({k: torch.zeros(1) for k in key_map})
    assert list(renamed) == list(key_map.values())


@torch.no_grad()
def test_videoswin_mmaction_parity(fixtures: dict, clip: torch.Tensor) -> None:
    path = FIXTURES / "videoswin_mmaction_tiny.pth"
    config = torch.load(path, weights_only=True)["meta"]["config"]
    arch = {k: v for k, v in config.items() if k != "drop_path_rate"}
    model = build("swin3d", path, **arch)
    assert model.weights_info["layout"] == "mmaction"
    assert model.weights_info["sha256"] == fixtures["videoswin_mmaction_tiny.pth"]["sha256"]
    assert model.feature_dim == model.spec.feature_dim == 256
    assert model.num_classes == 600

    want = expected("videoswin_expected.pt")
    features = model.forward_features(clip)
    assert max_err(features, want["features"]) < 1e-4
    # Looser: the fixture's logits are not reproducible from its own features and fp16 head
    # either (5.3e-4 off in float64), so they were computed before the head was rounded.
    assert max_err(model.head(features), want["logits"]) < 2e-3

    # Without architecture arguments the same architecture is read from the checkpoint.
    inferred = build("swin3d", path)
    assert inferred.arch == model.arch


# --- checkpoint layouts: save, load back, detect ---------------------------------------------


def test_gsteg157_round_trip(random_i3d: torch.nn.Module, tmp_path: Path) -> None:
    state = random_i3d.state_dict()
    state["logits.conv3d.weight"] = torch.randn(157, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.randn(157)
    path = tmp_path / "rgb_i3d_pretrained.pt"
    torch.save(state, path)

    loaded = build("i3d", path)
    assert loaded.weights_info["layout"] == "gsteg157"
    assert loaded.num_classes == 157 and loaded.arch == {"numerics": "piergiaj"}
    assert loaded.weights_info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())


def test_pytorchvideo_round_trip_and_hub_file(
    random_r50: torch.nn.Module, tmp_path: Path, monkeypatch
) -> None:
    path = tmp_path / "I3D_8x8_R50.pyth"
    torch.save({"model_state": random_r50.state_dict(), "epoch": 196}, path)

    loaded = build("i3d_r50", path)
    assert loaded.weights_info["layout"] == "pytorchvideo"
    assert loaded.weights_info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_same_weights(random_r50, loaded)

    # weights="pytorchvideo": the file torch.hub keeps under $TORCH_HOME, never downloaded.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(AqaError, match="I3D_8x8_R50.pyth not found"):
        build("i3d_r50", "pytorchvideo")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    path.rename(tmp_path / "torch" / "hub" / "checkpoints" / path.name)
    assert build("i3d_r50", "pytorchvideo").weights_info["sha256"] == loaded.weights_info["sha256"]


@torch.no_grad()
def test_torchvision_swin_round_trip(tmp_path: Path) -> None:
    model = build("swin3d", random_init=True, **TINY_SWIN)
    path = tmp_path / "swin.pth"
    torch.save(model.state_dict(), path)

    loaded = build("swin3d", path)  # architecture read from the keys
    assert loaded.weights_info["layout"] == "torchvision"
    assert loaded.arch == model.arch
    x = torch.randn(2, 3, 4, 48, 48)
    assert torch.equal(loaded(x), model(x))


def test_torchvision_weights_are_looked_up_not_downloaded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = get_spec("swin3d_t").hub_url
    name = url.rsplit("/", 1)[-1]
    with pytest.raises(AqaError, match=f"{name} not found in {tmp_path}"):
        build("swin3d_t", "torchvision")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(build("swin3d", random_init=True, **TINY_SWIN).state_dict(), tmp_path / "f.pth")
    (tmp_path / "f.pth").rename(tmp_path / "hub" / "checkpoints" / name)
    with pytest.raises(AqaError, match="does not start with"):  # name promises another sha256
        build("swin3d_t", "torchvision")
    with pytest.raises(AqaError, match="has no torchvision weights"):
        build("i3d", "torchvision")


# --- seeding, shapes, memory format ----------------------------------------------------------


@pytest.mark.parametrize("name, arch", [("i3d", {}), ("swin3d", TINY_SWIN)])
def test_random_init_is_seeded_and_leaves_global_rng_alone(name: str, arch: dict) -> None:
    rng_before = torch.get_rng_state()
    a = build(name, random_init=True, seed=7, **arch)
    b = build(name, random_init=True, seed=7, **arch)
    c = build(name, random_init=True, seed=8, **arch)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert_same_weights(a, b)
    first = next(k for k, v in a.state_dict().items() if v.is_floating_point() and v.std() > 0)
    assert not torch.equal(a.state_dict()[first], c.state_dict()[first])
    assert a.weights_info == {
        "path": None,
        "sha256": None,
        "layout": a.layout,
        "random_init": True,
        "seed": 7,
        "num_classes": 400,
        "entry": None,
        "normalisation": get_spec(name).normalisation,
    }
    assert a.weights_entry is None
    assert not a.training


@torch.no_grad()
def test_i3d_r50_features_under_channels_last(random_r50: torch.nn.Module) -> None:
    model = random_r50.to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 3, 8, 193, 193).contiguous(memory_format=torch.channels_last_3d)
    features = model.forward_features(x)  # the smallest clip the (4, 7, 7) head pool accepts
    assert features.shape == (1, model.feature_dim) == (1, get_spec("i3d_r50").feature_dim)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name, dim", [("swin3d_t", 768), ("swin3d_s", 768), ("swin3d_b", 1024)])
def test_torchvision_swin_sizes(name: str, dim: int) -> None:
    with torch.device("meta"):  # shapes only: no time spent initialising 28-88M weights
        model = build(name, random_init=True)
        assert model(torch.empty(1, 3, 3, 40, 40)).shape == (1, dim)
    assert model.feature_dim == get_spec(name).feature_dim == dim


def test_hassony2_numerics_with_random_weights() -> None:
    model = build("i3d", random_init=True, numerics="hassony2")
    assert model.weights_info["layout"] == "hassony2"


def test_registry_and_specs() -> None:
    names = list_backbones()
    assert {"i3d", "i3d_r50", "swin3d", "swin3d_t", "swin3d_s", "swin3d_b"} <= set(names)
    for name in names:
        spec = get_spec(name)
        assert spec.name == name and spec.min_frames >= 1 and spec.description
        assert spec.normalisation in ("imagenet", "minus1_1", "kinetics")
    assert get_spec("i3d").normalisation == "minus1_1"
    assert get_spec("i3d_r50").normalisation == "kinetics"


# --- errors ----------------------------------------------------------------------------------


def test_weights_are_required() -> None:
    with pytest.raises(AqaError, match="--random-init"):
        build("i3d")
    with pytest.raises(AqaError, match="unknown backbone 'c3d'"):
        build("c3d", random_init=True)
    with pytest.raises(AqaError, match="does not take depth"):
        build("i3d", random_init=True, depth=3)
    with pytest.raises(AqaError, match="not divisible"):
        build("swin3d", random_init=True, embed_dim=10, num_heads=(3, 6, 12, 24))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AqaError, match="nope.pt: weights file not found"):
        build("i3d", tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint" * 50)
    with pytest.raises(AqaError, match="garbage.pt: not a PyTorch checkpoint"):
        build("i3d", garbage)
    odd = tmp_path / "odd.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, odd)
    with pytest.raises(
        AqaError, match="odd.pt: unrecognised checkpoint key layout.*encoder.weight"
    ):
        build("i3d", odd)
    swin = tmp_path / "swin.pth"
    torch.save(build("swin3d", random_init=True, **TINY_SWIN).state_dict(), swin)
    with pytest.raises(AqaError, match="swin.pth: this is a 'torchvision' checkpoint.*'i3d'"):
        build("i3d", swin)


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    state = build("swin3d", random_init=True, **TINY_SWIN).state_dict()
    path = tmp_path / "swin.pth"
    torch.save(state, path)
    wrong_shape = "wrong shape, e.g. patch_embed.proj.weight (16, 3, 2, 4, 4) (expected (32, "
    with pytest.raises(AqaError, match=f"swin.pth: weights do not fit.*{re.escape(wrong_shape)}"):
        build("swin3d", path, embed_dim=32)  # the rest of the architecture is read from the file

    torch.save({**state, "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(AqaError, match="1 unexpected keys, e.g. extra.weight"):
        build("swin3d", path)

    state.pop("norm.weight")
    torch.save(state, path)
    with pytest.raises(AqaError, match="1 missing keys, e.g. norm.weight"):
        build("swin3d", path)


def test_unsafe_pickle_needs_consent(tmp_path: Path) -> None:
    state = build("swin3d", random_init=True, **TINY_SWIN).state_dict()
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(AqaError, match="with_args.pth: .*allow_unsafe_pickle"):
        build("swin3d", path)
    assert build("swin3d", path, allow_unsafe_pickle=True).weights_info["layout"] == "torchvision"


def test_clips_too_small_or_misshapen(random_i3d: torch.nn.Module) -> None:
    with pytest.raises(AqaError, match="at least 9 frames of 193x193"):
        random_i3d(torch.zeros(1, 3, 8, 224, 224))
    with pytest.raises(AqaError, match=r"expected clips shaped \(B, 3, T, H, W\)"):
        random_i3d(torch.zeros(1, 16, 3, 224, 224))
