"""Hugging Face backbones (videomae, vjepa2): `aqa extract` against transformers' own forward,
what the cache records, snapshot-folder checks and the optional dependency.

Tiny random models are built here from a config and saved with save_pretrained into temporary
folders; nothing is downloaded. Tests that need transformers skip without it (the `hf` extra);
the folder checks and the missing-dependency message are tested either way.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from aqa_pipeline.cli import main
from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.backbones import build
from aqa_pipeline.extract.backbones.hf import read_preprocessing, read_snapshot
from aqa_pipeline.features import read_features
from aqa_pipeline.synthetic import moving_square

INSTALL_HINT = "pip install 'aqa-pipeline[hf]'"
SIZE, FRAMES = 32, 4  # tiny clips: 4 frames of 32 x 32, patch 16, tubelet 2 -> 8 tokens
VIDEO_LENGTHS = {"a": 8, "b": 12}  # frame folders -> 2 + 3 clips of 4 frames
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
KINETICS = ([0.45, 0.45, 0.45], [0.225, 0.225, 0.225])
PRESET_NUMBERS = {"imagenet": IMAGENET, "kinetics": KINETICS}


def needs_transformers():
    return pytest.importorskip(
        "transformers", reason=f"transformers is not installed (the hf extra: {INSTALL_HINT})"
    )


def aqa(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- fixtures: frame folders and tiny snapshots -----------------------------------------------


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Folder of frame folders (lossless PNG at the model's size: no resize, no crop)."""
    root = tmp_path_factory.mktemp("frames")
    for seed, (vid, n) in enumerate(VIDEO_LENGTHS.items()):
        (root / vid).mkdir()
        for i, frame in enumerate(moving_square(n, (SIZE, SIZE), 3.0, seed)):
            Image.fromarray(frame).save(root / vid / f"img_{i:05d}.png")
    return root


def clips_of(frames: Path) -> torch.Tensor:
    """The uint8 clips the recipe below makes, (C, T, H, W, 3), video after video."""
    out = []
    for vid, n in VIDEO_LENGTHS.items():
        video = np.stack(
            [np.asarray(Image.open(p).convert("RGB")) for p in sorted((frames / vid).glob("*.png"))]
        )
        out += [video[s : s + FRAMES] for s in range(0, n - FRAMES + 1, FRAMES)]
    return torch.from_numpy(np.stack(out))


def normalised(clips: torch.Tensor, preset: str) -> torch.Tensor:
    """(C, T, H, W, 3) uint8 -> (C, T, 3, H, W) float32, transformers' layout."""
    mean, std = (torch.tensor(v).view(1, 1, 3, 1, 1) * 255.0 for v in PRESET_NUMBERS[preset])
    return (clips.float().permute(0, 1, 4, 2, 3) - mean) / std


def recipe(tmp_path: Path, backbone: str, **arch) -> Path:
    path = tmp_path / f"{backbone}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": f"tiny_{backbone}",
                "backbone": {"name": backbone, "arch": arch},
                "sampling": {"method": "consecutive", "clip_len": FRAMES},
            }
        )
    )
    return path


def save_snapshot(folder: Path, kind: str, classifier: bool, preset: str = "imagenet") -> Path:
    """A tiny random model of `kind` saved with save_pretrained, with its preprocessor config."""
    tf = needs_transformers()
    mean, std = PRESET_NUMBERS[preset]
    torch.manual_seed(0)
    labels = {"num_labels": 3} if classifier else {}
    if kind == "videomae":
        config = tf.VideoMAEConfig(
            image_size=SIZE,
            patch_size=16,
            num_frames=FRAMES,
            tubelet_size=2,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            use_mean_pooling=classifier,
            **labels,
        )
        cls = tf.VideoMAEForVideoClassification if classifier else tf.VideoMAEModel
        processor = tf.VideoMAEImageProcessor(
            size={"shortest_edge": SIZE},
            crop_size={"height": SIZE, "width": SIZE},
            image_mean=mean,
            image_std=std,
        )
    else:
        config = tf.VJEPA2Config(
            crop_size=SIZE,
            frames_per_clip=FRAMES,
            patch_size=16,
            tubelet_size=2,
            hidden_size=24,
            num_attention_heads=2,
            num_hidden_layers=2,
            mlp_ratio=2.0,
            num_pooler_layers=1,
            pred_hidden_size=12,
            pred_num_attention_heads=2,
            pred_num_hidden_layers=1,
            **labels,
        )
        cls = tf.VJEPA2ForVideoClassification if classifier else tf.VJEPA2Model
        processor = tf.VJEPA2VideoProcessor(crop_size=SIZE, image_mean=mean, image_std=std)
    model = cls(config)
    if kind == "videomae" and not classifier:  # the final LayerNorm of pretraining snapshots
        assert model.layernorm is not None
    tf.utils.logging.disable_progress_bar()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


SNAPSHOTS = {  # name: (backbone, classifier, preset, pooling the backbone picks)
    "videomae": ("videomae", False, "imagenet", "mean"),
    "videomae_cls": ("videomae", True, "imagenet", "fc_norm"),
    "videomae_kinetics": ("videomae", False, "kinetics", "mean"),
    "vjepa2": ("vjepa2", False, "imagenet", "mean"),
    "vjepa2_cls": ("vjepa2", True, "imagenet", "pooler"),
}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, Path]:
    needs_transformers()
    root = tmp_path_factory.mktemp("snapshots")
    return {
        name: save_snapshot(root / name, kind, classifier, preset)
        for name, (kind, classifier, preset, _) in SNAPSHOTS.items()
    }


def reference_features(folder: Path, name: str, x: torch.Tensor) -> torch.Tensor:
    """transformers' own model, loaded on its own, on (C, T, 3, H, W) clips, pooled as the
    classifier pools (fc_norm / pooler) or as the mean of the last hidden states."""
    tf = needs_transformers()
    kind, classifier, _, pooling = SNAPSHOTS[name]
    prefix = "VideoMAE" if kind == "videomae" else "VJEPA2"
    cls = getattr(tf, f"{prefix}ForVideoClassification" if classifier else f"{prefix}Model")
    model = cls.from_pretrained(folder, local_files_only=True).eval()
    with torch.inference_mode():
        if kind == "videomae":
            base = model.videomae if classifier else model
            tokens = base(pixel_values=x).last_hidden_state
        else:
            base = model.vjepa2 if classifier else model
            tokens = base(pixel_values_videos=x, skip_predictor=True).last_hidden_state
        if pooling == "fc_norm":
            return model.fc_norm(tokens.mean(1))
        if pooling == "pooler":
            return model.pooler(tokens)
        return tokens.mean(1)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def canonical_config_sha256(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    kept = {k: v for k, v in config.items() if k not in ("transformers_version", "_name_or_path")}
    return hashlib.sha256(
        json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


# --- parity and provenance through `aqa extract` ----------------------------------------------


@pytest.mark.parametrize("name", list(SNAPSHOTS))
def test_extract_equals_transformers_forward(name, snapshots, frames, tmp_path) -> None:
    kind, classifier, preset, pooling = SNAPSHOTS[name]
    folder = snapshots[name]
    out = tmp_path / "c.h5"
    # one batch holds all 5 clips, as the reference below runs them (CPU kernels may round
    # differently for other batch shapes, so the same batch is what exactness needs)
    res = aqa(
        "extract",
        "--config",
        recipe(tmp_path, kind),
        "--input",
        frames,
        "--output",
        out,
        "--weights",
        folder,
        "--workers",
        "0",
        "--batch-size",
        "8",
    )
    assert res.exit_code == 0, res.output
    fs = read_features(out)
    assert fs.video_ids == list(VIDEO_LENGTHS) and fs.ok_mask.all()
    assert np.diff(fs.clip_offsets).tolist() == [2, 3]

    want = reference_features(folder, name, normalised(clips_of(frames), preset))
    got = torch.from_numpy(fs.clip_features)
    assert got.shape == want.shape == (5, 32 if kind == "videomae" else 24)
    assert torch.equal(got, want), (got - want).abs().max()

    # what the cache records: model type, config hash, weights sha256, pooling, preprocessing
    with h5py.File(out) as f:
        key_fields = json.loads(f.attrs["key_fields"])
        provenance = json.loads(f.attrs["provenance"])
    weights = provenance["weights_file"]
    assert weights["model_type"] == kind
    assert weights["config_sha256"] == canonical_config_sha256(folder)
    assert weights["sha256"] == file_sha256(folder / "model.safetensors")
    assert key_fields["weights"]["sha256"] == weights["sha256"]
    assert key_fields["weights"]["config_sha256"] == weights["config_sha256"]  # in the key
    assert weights["pooling"] == pooling
    assert weights["architecture"].endswith("ForVideoClassification") == classifier
    assert weights["layout"] == "huggingface"
    assert weights["normalisation"] == preset == key_fields["preprocess"]["normalize"]
    processor_file = "preprocessor_config.json" if kind == "videomae" else "video_preprocessor_config.json"  # fmt: skip
    assert weights["preprocessor"]["file"] == processor_file
    assert weights["preprocessor"]["crop"] == [SIZE, SIZE]
    assert weights["weights_files"] == {"model.safetensors": weights["sha256"]}
    assert provenance["normalize_override"] is None
    assert provenance["runs"][0]["weights_path"] == str(folder.resolve())


def test_normalisation_matches_the_snapshot_processor(snapshots, frames) -> None:
    """The preset read from the preprocessor config is the processor's own rescale + normalise
    (float rounding apart: it divides by 255 first, the engine folds 255 into mean/std)."""
    tf = needs_transformers()
    clips = clips_of(frames)
    for name in ("videomae", "videomae_kinetics"):
        processor = tf.VideoMAEImageProcessor.from_pretrained(snapshots[name])
        preset = SNAPSHOTS[name][2]
        ours = normalised(clips[:1], preset)
        theirs = processor(list(clips[0].numpy()), do_resize=False, do_center_crop=False,
                           return_tensors="pt").pixel_values  # fmt: skip
        assert theirs.shape == ours.shape == (1, FRAMES, 3, SIZE, SIZE)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        assert not torch.allclose(
            normalised(clips[:1], "kinetics" if preset == "imagenet" else "imagenet"),
            theirs,
            atol=1e-3,
        )


# --- the Python API ---------------------------------------------------------------------------


def test_classifier_pooling_is_what_the_classifier_reads(snapshots) -> None:
    x = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    for name, pooled in (("videomae_cls", "fc_norm"), ("vjepa2_cls", "pooler")):
        model = build(SNAPSHOTS[name][0], weights=snapshots[name])
        assert model.pooling == pooled and model.num_classes == 3
        with torch.inference_mode():
            features = model.forward_features(x)
            assert torch.equal(model.model.classifier(features), model.forward_logits(x))
        mean = build(SNAPSHOTS[name][0], weights=snapshots[name], pooling="mean")
        with torch.inference_mode():
            assert not torch.allclose(mean.forward_features(x), features)
    with pytest.raises(AqaError, match="pooling 'fc_norm' needs"):
        build("videomae", weights=snapshots["videomae"], pooling="fc_norm")


def test_snapshot_entry_and_clip_checks(snapshots) -> None:
    model = build("videomae", weights=snapshots["videomae"])
    entry = model.weights_entry
    assert entry.normalisation == "imagenet" and entry.layout == "huggingface"
    assert entry.sha256 == file_sha256(snapshots["videomae"] / "model.safetensors")
    assert model.weights_info["entry"] == entry.name == f"hf_videomae_{entry.sha256[:8]}"
    assert model.spec.min_frames == FRAMES and model.spec.min_size == SIZE
    assert model.feature_dim == 32 and not model.training
    with pytest.raises(AqaError, match=r"exactly 4 frames of 32x32.*sampling.clip_len=4"):
        model.forward_features(torch.zeros(1, 3, 8, SIZE, SIZE))
    vjepa = build("vjepa2", weights=snapshots["vjepa2"])
    assert vjepa.forward_features(torch.zeros(1, 3, 8, SIZE, SIZE)).shape == (1, 24)
    with pytest.raises(AqaError, match="a multiple of 2 frames of 32x32"):
        vjepa.forward_features(torch.zeros(1, 3, 3, SIZE, SIZE))
    with pytest.raises(AqaError, match="a multiple of 2 frames of 32x32"):
        vjepa.forward_features(torch.zeros(1, 3, 4, 48, 48))


def test_random_init_is_seeded_and_configurable() -> None:
    needs_transformers()
    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "image_size": SIZE, "num_frames": FRAMES}  # fmt: skip
    rng = torch.get_rng_state()
    a, b, c = (build("videomae", random_init=True, seed=s, config=tiny) for s in (3, 3, 4))
    assert torch.equal(torch.get_rng_state(), rng)
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert a.weights_info["random_init"] and a.weights_info["config_sha256"]
    assert a.weights_info["model_type"] == "videomae" and a.feature_dim == 16
    with pytest.raises(AqaError, match="no key 'hiden_size' .did you mean hidden_size"):
        build("videomae", random_init=True, config={"hiden_size": 8})


def test_preprocessing_fallback_and_refusals(tmp_path, caplog) -> None:
    assert read_preprocessing(tmp_path).file is None  # no preprocessor config at all
    fallback = read_preprocessing(tmp_path)
    assert fallback.preset == "imagenet" and list(fallback.mean) == IMAGENET[0]
    assert "using ImageNet mean/std" in caplog.text
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2], "size": 224})
    )
    with pytest.raises(AqaError, match=r"preprocessor_config.json: image_mean \[0.5, 0.4, 0.3\]"):
        read_preprocessing(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": 0.5, "image_std": 0.5, "size": 224})  # old feature extractors
    )
    old = read_preprocessing(tmp_path)
    assert (old.preset, old.short_side, old.crop) == ("minus1_1", 224, (224, 224))
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_mean": KINETICS[0],
                "image_std": KINETICS[1],
                "crop_size": 256,
                "size": {"shortest_edge": 292},
            }
        )
    )
    video = read_preprocessing(tmp_path)  # the video processor's file comes first
    assert (video.file, video.preset, video.crop) == (
        "video_preprocessor_config.json",
        "kinetics",
        (256, 256),
    )


# --- bad snapshot folders: exit 1 naming the path, before any work ----------------------------


def fake_snapshot(folder: Path, model_type: str = "videomae") -> Path:
    """The files of a snapshot, without a working model (enough for the folder checks)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    return folder


def extract_with(tmp_path: Path, frames: Path, weights: Path, backbone: str = "videomae"):
    return aqa(
        "extract",
        "--config",
        recipe(tmp_path, "videomae"),
        "--input",
        frames,
        "--output",
        tmp_path / "c.h5",
        "--weights",
        weights,
        "--backbone",
        backbone,
        "--workers",
        "0",
    )


def test_missing_config_json(tmp_path, frames) -> None:
    snap = fake_snapshot(tmp_path / "snap")
    (snap / "config.json").unlink()
    res = extract_with(tmp_path, frames, snap)
    assert res.exit_code == 1, res.output
    assert f"{snap}: not a complete Hugging Face snapshot: config.json missing" in res.output
    assert "model.safetensors" in res.output  # what the folder holds
    assert "Traceback" not in res.output and not (tmp_path / "c.h5").exists()


def test_missing_weights_file_names_pickles(tmp_path, frames) -> None:
    snap = fake_snapshot(tmp_path / "snap")
    (snap / "model.safetensors").rename(snap / "pytorch_model.bin")
    res = extract_with(tmp_path, frames, snap)
    assert res.exit_code == 1, res.output
    assert f"{snap}: not a complete Hugging Face snapshot: model.safetensors missing" in res.output
    assert "pickle files" in res.output and "refs/pr/N" in res.output


def test_a_file_instead_of_a_folder(tmp_path, frames) -> None:
    snap = fake_snapshot(tmp_path / "snap")
    res = extract_with(tmp_path, frames, snap / "model.safetensors")
    assert res.exit_code == 1, res.output
    assert f"{snap / 'model.safetensors'}: is a file; backbone 'videomae' loads a Hugging Face snapshot folder" in res.output  # fmt: skip


def test_a_folder_for_a_file_backbone(tmp_path, frames) -> None:
    snap = fake_snapshot(tmp_path / "snap")
    res = extract_with(tmp_path, frames, snap, backbone="swin3d_t")
    assert res.exit_code == 1, res.output
    assert f"{snap}: is a folder; backbone 'swin3d_t' loads a weights file" in res.output
    assert "videomae, vjepa2" in res.output


def test_a_snapshot_of_the_other_model(tmp_path) -> None:
    snap = fake_snapshot(tmp_path / "snap", model_type="vjepa2")
    with pytest.raises(AqaError, match=r"model_type is 'vjepa2'.*use --backbone vjepa2"):
        read_snapshot(snap, "videomae")
    with pytest.raises(AqaError, match="weights folder not found"):
        read_snapshot(tmp_path / "nowhere", "videomae")


# --- without the extra ------------------------------------------------------------------------


def test_without_transformers_the_error_says_what_to_install(tmp_path, frames, monkeypatch) -> None:
    snap = fake_snapshot(tmp_path / "snap")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(
        AqaError, match=rf"needs Hugging Face transformers.*{re.escape(INSTALL_HINT)}"
    ):
        build("vjepa2", random_init=True)
    res = extract_with(tmp_path, frames, snap)
    assert res.exit_code == 1, res.output
    assert "backbone 'videomae' needs Hugging Face transformers" in res.output
    assert INSTALL_HINT in res.output and "Traceback" not in res.output


def test_list_backbones_without_transformers() -> None:
    code = (
        "import sys; sys.modules['transformers'] = None; from aqa_pipeline.cli import main; "
        "main(['list', 'backbones'])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    assert {"videomae", "vjepa2", "i3d", "swin3d_b"} <= set(names)
    assert INSTALL_HINT in res.stdout


def test_shipped_recipes_tile_into_the_clip_length() -> None:
    from aqa_pipeline.extract.recipe import load_recipe

    videomae = load_recipe("videomae_b_fisv")
    assert videomae.backbone.name == "videomae" and videomae.sampling.clip_len == 16
    assert videomae.sampling.stride == 16 and videomae.preprocess.normalize is None
    assert videomae.preprocess.crop == (224, 224)
    vjepa = load_recipe("vjepa2_l_fisv")
    assert vjepa.backbone.name == "vjepa2" and vjepa.sampling.clip_len == 64
    assert vjepa.preprocess.crop == (256, 256) and vjepa.preprocess.normalize is None


def test_snapshot_folder_in_the_hub_cache_records_repo_and_revision(tmp_path) -> None:
    needs_transformers()
    rev = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "models--MCG-NJU--videomae-base" / "snapshots" / rev
    save_snapshot(folder, "videomae", classifier=False)
    snap = read_snapshot(folder, "videomae")
    assert dict(snap.origin) == {"hub_repo": "MCG-NJU/videomae-base", "hub_revision": rev}
    shutil.rmtree(folder)


def test_sharded_snapshot_loads_the_same_model(snapshots, tmp_path) -> None:
    tf = needs_transformers()
    folder = tmp_path / "sharded"
    model = tf.VJEPA2Model.from_pretrained(snapshots["vjepa2"], local_files_only=True)
    model.save_pretrained(folder, max_shard_size="20KB")
    shutil.copy(snapshots["vjepa2"] / "video_preprocessor_config.json", folder)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()
    sharded, single = build("vjepa2", weights=folder), build("vjepa2", weights=snapshots["vjepa2"])
    x = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.inference_mode():
        assert torch.equal(sharded.forward_features(x), single.forward_features(x))
    listing = "".join(f"{file_sha256(folder / n)}  {n}\n" for n in shards)  # sha256sum's output
    assert sharded.weights_info["sha256"] == hashlib.sha256(listing.encode()).hexdigest()
    assert sorted(sharded.weights_info["weights_files"]) == shards
    (folder / shards[-1]).unlink()
    with pytest.raises(
        AqaError, match=rf"shard {shards[-1]} named in model.safetensors.index.json is missing"
    ):
        build("vjepa2", weights=folder)


def copy_without(folder: Path, dest: Path, drop) -> Path:
    """A copy of snapshot `folder` whose model.safetensors lacks the tensors `drop(key)` picks."""
    from safetensors.torch import load_file

    shutil.copytree(folder, dest)
    tensors = {k: v for k, v in load_file(folder / "model.safetensors").items() if not drop(k)}
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_weights_missing_from_the_file_are_refused(snapshots, tmp_path) -> None:
    """transformers would fill a missing weight at random; the build refuses it instead,
    except V-JEPA 2's predictor, which features never run."""
    broken = copy_without(snapshots["videomae"], tmp_path / "broken", lambda k: ".layer.1." in k)
    with pytest.raises(
        AqaError, match=r"model.safetensors: the weights do not fit VideoMAEModel.*missing"
    ):
        build("videomae", weights=broken)
    encoder_only = copy_without(
        snapshots["vjepa2"], tmp_path / "enc", lambda k: k.startswith("predictor.")
    )
    x = torch.randn(1, 3, FRAMES, SIZE, SIZE)
    with torch.inference_mode():
        assert torch.equal(
            build("vjepa2", weights=encoder_only).forward_features(x),
            build("vjepa2", weights=snapshots["vjepa2"]).forward_features(x),
        )


def test_a_recipe_of_the_wrong_clip_size_is_refused_before_decoding(snapshots, frames, tmp_path):
    model = build("videomae", weights=snapshots["videomae"])
    model.check_input(FRAMES, (SIZE, SIZE))  # fits
    with pytest.raises(AqaError, match=r"exactly 4 frames of 32x32"):
        model.check_input(FRAMES, (SIZE - 8, SIZE - 8))
    path = tmp_path / "crop.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny_crop", "backbone": {"name": "videomae"},
        "sampling": {"method": "consecutive", "clip_len": FRAMES},
        "preprocess": {"crop": [SIZE - 8, SIZE - 8]},
    }))  # fmt: skip
    out = tmp_path / "c.h5"
    res = aqa("extract", "--config", path, "--input", frames, "--output", out, "--weights",
              snapshots["videomae"], "--workers", "0")  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "clips of 4x24x24" in res.output and "sampling.clip_len=4" in res.output
    assert "Traceback" not in res.output and not out.exists()
