"""Weights entries: the registry's consistency, identifying files, and normalisation presets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision.models.video import Swin3D_B_Weights, Swin3D_S_Weights, Swin3D_T_Weights

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.backbones import (
    BackboneSpec,
    build,
    get_spec,
    get_weights,
    list_backbones,
    list_weights,
    match_weights,
    read_checkpoint,
    register_weights,
    resolve_normalisation,
)
from aqa_pipeline.extract.backbones import weights as weights_module
from aqa_pipeline.extract.backbones.checkpoints import (
    CLASSIFIER_KEYS,
    LAYOUTS,
    Checkpoint,
    hub_hash_prefix,
)
from aqa_pipeline.extract.backbones.registry import NORMALISATIONS
from aqa_pipeline.extract.backbones.weights import (
    KINETICS400_CATEGORIES,
    LAYOUT_NORMALISATION,
    WeightsEntry,
    describe_weights,
    expected_normalisation,
)
from aqa_pipeline.extract.normalisation import PRESETS, check_preset

from .conftest import needs_shared

TINY_SWIN = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=(2, 3, 3))

# The files AQA users hold (REFERENCE.md section 4 and the sources named in each entry).
KNOWN_FILES = {
    "rgb_imagenet.pt",
    "rgb_charades.pt",
    "rgb_i3d_pretrained.pt",
    "model_rgb.pth",
    "I3D_8x8_R50.pyth",
    "swin3d_t-7615ae03.pth",
    "swin3d_s-da41c237.pth",
    "swin3d_b_1k-24f7c7c6.pth",
    "swin3d_b_22k-7c6ae6fa.pth",
    "swin_tiny_patch244_window877_kinetics400_1k.pth",
    "swin_small_patch244_window877_kinetics400_1k.pth",
    "swin_base_patch244_window877_kinetics400_1k.pth",
    "swin_base_patch244_window877_kinetics400_22k.pth",
    "swin_base_patch244_window877_kinetics600_22k.pth",
}


@pytest.fixture(scope="module")
def i3d_state() -> dict[str, torch.Tensor]:
    return build("i3d", random_init=True).state_dict()


def fake_checkpoint(file_name: str, layout: str, num_classes: int, sha256: str = "0" * 64):
    """A Checkpoint with only a classifier weight: enough for match_weights."""
    state = {CLASSIFIER_KEYS[layout]: torch.zeros(num_classes, 1)} if num_classes else {}
    return Checkpoint(Path("/weights") / file_name, sha256, layout, state)


def plain(value):
    """JSON round trip: tuples become lists, so arch records compare by value."""
    return json.loads(json.dumps(dict(value)))


# --- the registry ----------------------------------------------------------------------------


def test_every_known_file_has_one_entry() -> None:
    entries = list_weights()
    assert sorted(e.file_name for e in entries) == sorted(KNOWN_FILES)
    assert len({e.name for e in entries}) == len(entries)
    assert [e.name for e in entries] == sorted(e.name for e in entries)


def test_entries_fit_their_backbone_layout_and_presets() -> None:
    backbones = set(list_backbones())
    for entry in list_weights():
        assert entry.backbone in backbones, entry.name
        assert entry.layout in LAYOUTS, entry.name
        assert entry.layout in get_spec(entry.backbone).layouts, entry.name
        assert entry.normalisation in PRESETS, entry.name
        # the fallback for unknown files of this layout says what the entries say
        assert entry.normalisation == LAYOUT_NORMALISATION[entry.layout], entry.name
        assert entry.normalisation == get_spec(entry.backbone).normalisation, entry.name
        assert entry.source and entry.licence and entry.dataset, entry.name
        if entry.dataset.startswith("Kinetics-400") and entry.num_classes == 400:
            assert entry.categories == KINETICS400_CATEGORIES, entry.name
        else:
            assert entry.categories is None, entry.name
        assert entry.sha256 is None  # no source publishes a full sha256


def test_the_normalisation_of_each_file() -> None:
    expected = {
        "rgb_imagenet.pt": "minus1_1",
        "rgb_charades.pt": "minus1_1",
        "rgb_i3d_pretrained.pt": "minus1_1",  # GSTEG trains with Normalize(0.5, 0.5)
        "model_rgb.pth": "minus1_1",
        "I3D_8x8_R50.pyth": "kinetics",
    }
    for entry in list_weights():
        assert entry.normalisation == expected.get(entry.file_name, "imagenet"), entry.name


def test_entries_agree_with_torchvision_weights() -> None:
    members = [*Swin3D_T_Weights, *Swin3D_S_Weights, *Swin3D_B_Weights]
    by_file = {e.file_name: e for e in list_weights()}
    for weights in members:
        entry = by_file[weights.url.rsplit("/", 1)[-1]]
        assert entry.layout == "torchvision"
        assert entry.url == weights.url
        assert entry.sha256_prefix == hub_hash_prefix(entry.file_name)
        assert len(entry.sha256_prefix) == 8
        assert entry.categories == tuple(weights.meta["categories"])
        transform = weights.transforms()
        mean, std = PRESETS[entry.normalisation]
        assert tuple(transform.mean) == mean and tuple(transform.std) == std
    assert len(members) == sum(e.layout == "torchvision" for e in list_weights())


def test_mmaction_normalisation_is_imagenet_on_0_255() -> None:
    # img_norm_cfg of every Video-Swin config
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    want_mean, want_std = PRESETS["imagenet"]
    assert [m / 255 for m in mean] == pytest.approx(want_mean, abs=1e-6)
    assert [s / 255 for s in std] == pytest.approx(want_std, abs=1e-6)


@pytest.mark.parametrize("entry", list_weights(), ids=lambda e: e.name)
def test_entry_arch_is_what_the_backbone_builds(entry: WeightsEntry) -> None:
    kwargs = {"numerics": entry.arch["numerics"]} if entry.backbone == "i3d" else {}
    with torch.device("meta"):  # shapes only
        model = build(entry.backbone, random_init=True, **kwargs)
    assert plain(model.arch) == plain(entry.arch)
    if entry.backbone == "i3d":  # the numerics of the port that wrote the file
        assert entry.arch["numerics"] == ("hassony2" if entry.layout == "hassony2" else "piergiaj")
    if entry.backbone.startswith("swin3d"):  # the generic swin3d takes arch as its kwargs
        with torch.device("meta"):
            generic = build("swin3d", random_init=True, **entry.arch)
        assert generic.arch == model.arch


def test_registry_lookups_and_errors() -> None:
    entry = get_weights("i3d_piergiaj_rgb_imagenet")
    assert entry.file_name == "rgb_imagenet.pt" and entry.backbone == "i3d"
    assert {e.backbone for e in list_weights("i3d")} == {"i3d"}
    assert len(list_weights("i3d")) == 4 and len(list_weights("swin3d_b")) == 5
    assert list_weights("swin3d") == []
    with pytest.raises(AqaError, match="unknown weights entry 'rgb'.*i3d_piergiaj_rgb_imagenet"):
        get_weights("rgb")
    with pytest.raises(AqaError, match="unknown backbone 'c3d'"):
        list_weights("c3d")
    with pytest.raises(ValueError, match="already registered"):
        register_weights(entry)


def test_entries_are_validated() -> None:
    entry = get_weights("i3d_piergiaj_rgb_imagenet")
    with pytest.raises(ValueError, match="unknown layout 'caffe'"):
        replace(entry, layout="caffe")
    with pytest.raises(ValueError, match="unknown normalisation preset 'zero_one'"):
        replace(entry, normalisation="zero_one")
    with pytest.raises(ValueError, match="400 categories for 157 classes"):
        replace(entry, num_classes=157)
    with pytest.raises(ValueError, match="sha256 must be 64"):
        replace(entry, sha256="abc")
    with pytest.raises(ValueError, match="does not start with sha256_prefix"):
        replace(entry, sha256="a" * 64, sha256_prefix="bbbbbbbb")
    with pytest.raises(TypeError):
        entry.arch["numerics"] = "hassony2"  # read-only


def test_summary_is_one_line() -> None:
    line = get_weights("swin3d_b_mmaction_k600_22k").summary()
    assert "\n" not in line
    for part in ("swin3d_b_mmaction_k600_22k", "swin3d_b ", "kinetics600_22k.pth", "imagenet"):
        assert part in line
    assert "600 classes: Kinetics-600" in line
    assert "400 classes" in get_weights("i3d_r50_pytorchvideo_k400").summary()


# --- identifying a checkpoint ----------------------------------------------------------------


def test_match_by_file_name() -> None:
    charades = fake_checkpoint("rgb_charades.pt", "gsteg157", 157)
    gsteg = fake_checkpoint("rgb_i3d_pretrained.pt", "gsteg157", 157)
    assert match_weights("i3d", charades).name == "i3d_piergiaj_rgb_charades"
    assert match_weights("i3d", gsteg).name == "i3d_gsteg_rgb_pretrained"
    # Two i3d entries have (gsteg157, 157): another name matches neither.
    assert match_weights("i3d", fake_checkpoint("mine.pt", "gsteg157", 157)) is None
    # The name alone is not enough: the classifier must fit too.
    assert match_weights("i3d", fake_checkpoint("rgb_imagenet.pt", "piergiaj", 0)) is None
    # ...and the layout.
    assert match_weights("i3d", fake_checkpoint("model_rgb.pth", "piergiaj", 0)) is None
    # A name match works from any backbone that loads the layout (generic swin3d).
    k600 = fake_checkpoint("swin_base_patch244_window877_kinetics600_22k.pth", "mmaction", 600)
    assert match_weights("swin3d", k600).name == "swin3d_b_mmaction_k600_22k"


def test_match_by_layout_and_classes() -> None:
    def match(backbone: str, layout: str, classes: int) -> str | None:
        entry = match_weights(backbone, fake_checkpoint("finetuned.pt", layout, classes))
        return entry.name if entry else None

    assert match("i3d", "piergiaj", 400) == "i3d_piergiaj_rgb_imagenet"
    assert match("i3d", "hassony2", 400) == "i3d_hassony2_rgb_imagenet"
    assert match("i3d_r50", "pytorchvideo", 400) == "i3d_r50_pytorchvideo_k400"
    assert match("swin3d_b", "mmaction", 600) == "swin3d_b_mmaction_k600_22k"
    assert match("swin3d_t", "mmaction", 400) == "swin3d_t_mmaction_k400_1k"
    assert match("swin3d_b", "mmaction", 400) is None  # 1k or 22k: ambiguous
    assert match("swin3d", "mmaction", 600) is None  # no entry is of the generic swin3d
    assert match("i3d", "piergiaj", 10) is None
    # torchvision entries publish a hash prefix: a file without it is not them.
    assert match("swin3d_t", "torchvision", 400) is None


def test_match_by_hash() -> None:
    by_prefix = fake_checkpoint("renamed.pth", "torchvision", 400, "7615ae03" + "0" * 56)
    assert match_weights("swin3d", by_prefix).name == "swin3d_t_torchvision_k400"
    # The torchvision file name with other contents: not that file, and not an error.
    wrong = fake_checkpoint("swin3d_t-7615ae03.pth", "torchvision", 400, "f" * 64)
    assert match_weights("swin3d_t", wrong) is None


def test_a_published_sha256_wins_over_the_file_name(monkeypatch) -> None:
    published = replace(
        get_weights("i3d_piergiaj_rgb_imagenet"),
        name="i3d_test_published",
        file_name="published.pt",
        sha256="ab" * 32,
    )
    monkeypatch.setitem(weights_module._WEIGHTS, published.name, published)
    named = fake_checkpoint("rgb_imagenet.pt", "piergiaj", 400, "ab" * 32)
    assert match_weights("i3d", named) is published
    # Its name with another hash is not that file: only the (layout, classes) match is left.
    other = fake_checkpoint("published.pt", "piergiaj", 400, "cd" * 32)
    assert match_weights("i3d", other).name == "i3d_piergiaj_rgb_imagenet"


def test_a_symlinked_file_is_known_by_the_name_given(tmp_path: Path) -> None:
    blob = tmp_path / "blobs" / "5e1c0ffee"
    blob.parent.mkdir()
    torch.save(
        {"Conv3d_1a_7x7.conv3d.weight": torch.zeros(1), "logits.conv3d.weight": torch.zeros(157)},
        blob,
    )
    link = tmp_path / "rgb_charades.pt"
    link.symlink_to(blob)
    checkpoint = read_checkpoint(link)
    assert checkpoint.path.name == "5e1c0ffee" and checkpoint.file_name == "rgb_charades.pt"
    assert checkpoint.num_classes == 157
    assert match_weights("i3d", checkpoint).name == "i3d_piergiaj_rgb_charades"


def test_classifier_keys_cover_every_layout() -> None:
    assert set(CLASSIFIER_KEYS) == set(LAYOUTS)
    assert fake_checkpoint("x.pt", "mmaction", 0).num_classes == 0


# --- build records the entry -----------------------------------------------------------------


def test_build_records_the_entry_and_its_normalisation(i3d_state, tmp_path: Path) -> None:
    path = tmp_path / "i3d_finetuned.pt"  # piergiaj layout, 400 classes, unknown name
    torch.save(i3d_state, path)
    model = build("i3d", weights=path)
    assert model.weights_info["entry"] == "i3d_piergiaj_rgb_imagenet"
    assert model.weights_info["normalisation"] == "minus1_1"
    assert model.weights_entry is get_weights("i3d_piergiaj_rgb_imagenet")
    assert expected_normalisation(model) == "minus1_1"
    json.dumps(model.weights_info)  # stored in the cache provenance as it is


def test_build_without_an_entry_uses_the_layout_default(i3d_state, tmp_path: Path) -> None:
    state = {**i3d_state, "logits.conv3d.weight": torch.zeros(157, 1024, 1, 1, 1)}
    state["logits.conv3d.bias"] = torch.zeros(157)
    torch.save(state, tmp_path / "rgb_i3d_pretrained.pt")
    torch.save(state, tmp_path / "dive_finetuned.pt")
    known = build("i3d", tmp_path / "rgb_i3d_pretrained.pt")
    assert known.weights_info["entry"] == "i3d_gsteg_rgb_pretrained"
    unknown = build("i3d", tmp_path / "dive_finetuned.pt")  # gsteg157/157 fits two entries
    assert unknown.weights_info["entry"] is None and unknown.weights_entry is None
    assert unknown.weights_info["normalisation"] == "minus1_1"

    swin = build("swin3d", random_init=True, **TINY_SWIN)
    torch.save(swin.state_dict(), tmp_path / "swin.pth")
    loaded = build("swin3d", tmp_path / "swin.pth")
    assert loaded.weights_info["entry"] is None
    assert loaded.weights_info["normalisation"] == "imagenet"


def test_build_identifies_the_real_piergiaj_fixture() -> None:
    path = needs_shared("fixtures", "backbones", "i3d_piergiaj_rgb400.pt")
    model = build("i3d", path)
    assert model.weights_info["entry"] == "i3d_piergiaj_rgb_imagenet"
    assert model.weights_info["normalisation"] == "minus1_1"


# --- resolving the recipe's normalisation ----------------------------------------------------


def test_resolve_normalisation(i3d_state, tmp_path: Path) -> None:
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(i3d_state, path)
    model = build("i3d", path)
    assert resolve_normalisation(model, None) == ("minus1_1", None)
    assert resolve_normalisation(model, "minus1_1") == ("minus1_1", None)
    preset, warning = resolve_normalisation(model, "imagenet")
    assert preset == "imagenet"
    assert warning == (
        "preprocess.normalize 'imagenet' overrides the 'minus1_1' normalisation that these "
        "weights (i3d_piergiaj_rgb_imagenet, rgb_imagenet.pt) expect"
    )
    with pytest.raises(AqaError, match="preprocess.normalize: unknown normalisation preset 'rgb'"):
        resolve_normalisation(model, "rgb")


def test_resolve_normalisation_without_an_entry() -> None:
    model = build("swin3d", random_init=True, seed=3, **TINY_SWIN)
    assert resolve_normalisation(model, None) == ("imagenet", None)
    # random weights expect nothing: a named preset is applied without an override warning
    assert resolve_normalisation(model, "kinetics") == ("kinetics", None)
    assert describe_weights(model) == "random init, seed 3"
    with pytest.raises(AqaError, match="build backbones with build"):
        expected_normalisation(torch.nn.Linear(1, 1))


# --- presets ---------------------------------------------------------------------------------


def test_presets_are_the_one_definition() -> None:
    import aqa_pipeline.extract.preprocess as pre

    assert pre.PRESETS is PRESETS  # preprocess.py reads the one definition
    assert NORMALISATIONS == tuple(PRESETS) == ("imagenet", "kinetics", "minus1_1")
    assert set(LAYOUT_NORMALISATION) == set(LAYOUTS)
    assert check_preset("kinetics") == "kinetics"
    with pytest.raises(AqaError, match="recipe.normalize: unknown normalisation preset 'bgr'"):
        check_preset("bgr", "recipe.normalize")
    with pytest.raises(ValueError, match="unknown normalisation preset 'bgr'"):
        BackboneSpec(name="x", feature_dim=1, normalisation="bgr", min_frames=1, description="x")
