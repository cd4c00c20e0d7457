"""Trust at the seams: every bad config value exits 1 before any work, naming the key, with
no traceback and nothing on disk changed; run directories never describe a run that did not
happen; outputs follow the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.config import list_configs
from aqa_pipeline.extract.recipe import load_recipe
from aqa_pipeline.train.config import load_train_config
from tests.train_fixtures import config, make_cache, write_labels


def aqa(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under folder: (mode, bytes)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_user_error(res, *words: str) -> None:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    for word in words:
        assert word in res.output, res.output


# ---------------------------------------------------------------------------- extract


@pytest.mark.parametrize(
    "override, words",
    [
        ("sampling.num_framez=32", ["sampling.num_framez", "did you mean num_frames?"]),
        ("sampling.clip_len=abc", ["sampling.clip_len", "integer"]),
        ("sampling.clip_len=0", ["sampling.clip_len", "greater than 0"]),
        ("preprocess.normalize=imagenett", ["preprocess.normalize", "imagenett", "minus1_1"]),
        ("backbone.name=i3dd", ["backbone.name", "did you mean i3d?"]),
        ("sampling.stride=4", ["sampling.stride", "consecutive"]),
        ("backbone.arch.numerix=hassony2", ["backbone.arch", "numerix", "did you mean numerics?"]),
    ],
)
def test_extract_refuses_bad_recipe_values_before_any_work(tmp_path, make_video, override, words):
    make_video("in/a.mp4")
    out = tmp_path / "c.h5"
    res = aqa("extract", "--config", "i3d_jigsaws", "--input", tmp_path / "in", "--output", out,
              "--random-init", "--set", override)  # fmt: skip
    assert_user_error(res, *words)
    assert not out.exists() and not Path(f"{out}.parts").exists()


def test_a_typo_inside_a_recipe_file_exits_1_naming_the_file_and_key(tmp_path, make_video):
    make_video("in/a.mp4")
    recipe = {
        "backbone": {"name": "i3d"},
        "sampling": {"method": "linspace", "num_framez": 32, "clip_len": 16},
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "c.h5"
    res = aqa("extract", "--config", path, "--input", tmp_path / "in", "--output", out,
              "--random-init")  # fmt: skip
    assert_user_error(res, str(path), "sampling.num_framez", "did you mean num_frames?")
    assert not out.exists()


@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--workers", "-1")])
def test_extract_refuses_bad_runtime_options(tmp_path, flag, value):
    res = aqa("extract", "--config", "demo", "--input", tmp_path, "--output", tmp_path / "c.h5",
              "--random-init", flag, value)  # fmt: skip
    assert res.exit_code == 2 and flag in res.output


def test_shipped_recipes_and_train_configs_validate():
    for name in list_configs("extract"):
        load_recipe(name)
    for name in list_configs("train"):
        load_train_config(name)


def test_no_shipped_config_points_at_shared():
    folder = Path(__file__).resolve().parents[1] / "aqa_pipeline" / "configs"
    for path in folder.rglob("*.yaml"):
        assert "shared" not in path.read_text(), path


# ---------------------------------------------------------------------------- train


@pytest.fixture
def finished_run(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg_file = tmp_path / "mlp.yaml"
    cfg_file.write_text(yaml.safe_dump(config("mlp", epochs=2)))
    run = tmp_path / "run"
    args = ["train", "--config", cfg_file, "--features", cache, "--labels", labels]
    res = aqa(*args, "--run-dir", run)
    assert res.exit_code == 0, res.output
    return args, run


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lr=abc", ["optim.lr = 'abc'", "number"]),
        ("optim.lr=-1", ["optim.lr = -1", "greater than 0"]),
        ("train.epochs=abc", ["train.epochs = 'abc'", "integer"]),
        ("train.epochs=2.7", ["train.epochs = 2.7", "fractional"]),
        ("train.epoch=3", ["unknown key train.epoch", "did you mean epochs?"]),
        ("head.hiden=[8]", ["head.hiden", "did you mean hidden?"]),
        ("data.crop_starts=last", ["data.crop_starts = 'last'", "'all' or 'authors'"]),
    ],
)
def test_train_refuses_bad_values_and_leaves_a_finished_run_untouched(
    finished_run, override, words
):
    args, run = finished_run
    before = snapshot(run)
    res = aqa(*args, "--run-dir", run, "--overwrite", "--set", override)
    assert_user_error(res, *words)
    assert snapshot(run) == before


def test_a_finished_run_directory_is_refused_unless_overwrite(finished_run):
    args, run = finished_run
    before = snapshot(run)
    res = aqa(*args, "--run-dir", run)
    assert_user_error(res, "already holds a run", "--overwrite")
    assert snapshot(run) == before
    res = aqa(*args, "--run-dir", run, "--overwrite", "--set", "train.epochs=3")
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3
    assert not any(p.name.startswith(".run.") for p in run.parent.iterdir())


def test_train_config_by_shipped_name(tmp_path):
    cfg = load_train_config("dae_mtl_aqa", ["train.epochs=3"])
    assert cfg.head_name == "dae" and cfg.train.epochs == 3
    res = aqa("train", "--config", "dae_mtl_aqq", "--features", tmp_path / "x.h5",
              "--run-dir", tmp_path / "r")  # fmt: skip
    assert_user_error(res, "dae_mtl_aqq", "did you mean dae_mtl_aqa?")


def test_run_outputs_follow_the_umask(tmp_path):
    cache, scores = make_cache(tmp_path / "f.h5")
    labels = f"csv:{write_labels(tmp_path / 'l.csv', scores)}"
    cfg_file = tmp_path / "mlp.yaml"
    cfg_file.write_text(yaml.safe_dump(config("mlp", epochs=2)))
    old = os.umask(0o022)
    try:
        res = aqa("train", "--config", cfg_file, "--features", cache, "--labels", labels,
                  "--run-dir", tmp_path / "run")  # fmt: skip
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir()
             if p.is_file()}  # fmt: skip
    assert modes["heads.safetensors"] == 0o644
    assert set(modes.values()) == {0o644}, modes


# ---------------------------------------------------------------------------- weights


def test_a_recipe_without_normalize_takes_the_weights_own(tmp_path, make_video, caplog):
    """piergiaj-layout I3D weights expect [-1, 1]: a recipe that names no normalize gives
    exactly the features (and the cache key) of normalize: minus1_1; naming imagenet runs,
    warns and records the override in the provenance."""
    import torch

    from aqa_pipeline.extract.backbones import build
    from aqa_pipeline.features import read_features

    weights = tmp_path / "rgb_imagenet.pt"
    torch.save(build("i3d", random_init=True, seed=3).state_dict(), weights)
    make_video("in/a.mp4", n_frames=16, size=(200, 200))
    base = {
        "backbone": {"name": "i3d"},
        "sampling": {"method": "consecutive", "clip_len": 16},
        "preprocess": {"resize": [200, 200]},
    }
    caches = {}
    for norm in (None, "minus1_1", "imagenet"):
        recipe = yaml.safe_load(yaml.safe_dump(base))
        if norm:
            recipe["preprocess"]["normalize"] = norm
        path = tmp_path / f"{norm}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        out = tmp_path / f"{norm}.h5"
        caplog.clear()
        res = aqa("extract", "--config", path, "--input", tmp_path / "in", "--output", out,
                  "--weights", weights, "--workers", "0")  # fmt: skip
        assert res.exit_code == 0, res.output
        caches[norm] = read_features(out)
        warned = [r for r in caplog.records if "overrides" in r.getMessage()]
        assert len(warned) == (1 if norm == "imagenet" else 0)
    implicit, explicit, other = caches[None], caches["minus1_1"], caches["imagenet"]
    assert implicit.key_fields["preprocess"]["normalize"] == "minus1_1"
    assert implicit.cache_key == explicit.cache_key
    assert torch.equal(torch.as_tensor(implicit.clip_features),
                       torch.as_tensor(explicit.clip_features))  # fmt: skip
    assert implicit.provenance["normalize_override"] is None
    assert not torch.allclose(torch.as_tensor(implicit.clip_features),
                              torch.as_tensor(other.clip_features))  # fmt: skip
    assert "overrides the 'minus1_1'" in other.provenance["normalize_override"]


@pytest.mark.parametrize(
    "what, name",
    [
        ("backbones", "swin3d_b"),
        ("weights", "i3d_piergiaj_rgb_imagenet"),
        ("recipes", "i3d_musdl"),
        ("configs", "dae_mtl_aqa"),
        ("heads", "interaqa"),
        ("datasets", "fisv"),
    ],
)
def test_aqa_list_prints_the_registries(what, name):
    res = aqa("list", what)
    assert res.exit_code == 0, res.output
    names = [line.split()[0] for line in res.output.splitlines() if line.strip()]
    assert name in names and len(names) == len(set(names))


def test_a_built_wheel_finds_its_configs_from_any_directory(tmp_path):
    """The configs are package data: a non-editable install (the wheel, unpacked) resolves
    `--config i3d_musdl` and `--config dae_mtl_aqa` from another directory."""
    import subprocess
    import sys
    import zipfile

    pytest.importorskip("setuptools", minversion="77")  # what pyproject.toml builds with
    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(root)], check=True, capture_output=True)  # fmt: skip
    site = tmp_path / "site"
    zipfile.ZipFile(next(wheels.glob("*.whl"))).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import aqa_pipeline, aqa_pipeline.config as c\n"
        "from aqa_pipeline.extract.recipe import load_recipe\n"
        "from aqa_pipeline.train.config import load_train_config\n"
        "print(aqa_pipeline.__file__)\n"
        "print(load_recipe('i3d_musdl').sampling.window, load_train_config('dae_mtl_aqa').head_name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                         text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    where, values = out.stdout.splitlines()[-2:]
    assert where.startswith(str(site)) and values == "103 dae"
