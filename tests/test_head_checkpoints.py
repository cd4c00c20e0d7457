"""Head checkpoints released by their authors (GDLT, InterAQA, DAE): their key layouts and
pickle containers load into our heads (`read_head_checkpoint`), `aqa evaluate --checkpoint`
scores one on a cache, `aqa train --init-from` starts from one, and every bad file is an
exit-1 message naming the file and the key, never a traceback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from aqa_pipeline.cli import main
from aqa_pipeline.errors import AqaError
from aqa_pipeline.results.predictions import Predictions
from aqa_pipeline.results.rundir import load_heads
from aqa_pipeline.train.heads import build_head
from aqa_pipeline.train.heads.authors import our_tensors, read_head_checkpoint, to_authors
from tests.train_fixtures import make_cache, write_labels

DIM = 32
# small heads in the authors' architectures (GDLT's projection halves the input width)
HEADS = {
    "gdlt": {"hidden_dim": 16, "ffn_dim": 48, "num_grades": 4},
    "interaqa": {"preset": "paper", "num_heads": 2, "ffn_dim": 32, "max_queries": 12},
    "dae": {"hidden": [24, 12]},
}
OPTIMIZER = {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}


def seeded(name: str, seed: int):
    torch.manual_seed(seed)
    return build_head(name, DIM, **HEADS[name]).eval()


def with_module(sd: dict) -> dict:
    """A state_dict as nn.DataParallel saves it."""
    return {f"module.{k}": v for k, v in sd.items()}


def authors_file(path: Path, name: str, container: str, head=None, rho_best=0.75) -> Path:
    """Save `head` (seed 0 by default) in its authors' layout and pickle container."""
    theirs = to_authors(head if head is not None else seeded(name, 0))
    if container == "bare":
        obj = theirs
    elif container == "dataparallel_nested":  # {'model': module.* state, 'epoch', 'optimizer'}
        obj = {"model": with_module(theirs), "epoch": 7, "optimizer": OPTIMIZER}
    elif container == "run_py":  # InterAQA's run.py: neck and head from DataParallel
        part = {p: {k.removeprefix(f"{p}."): v for k, v in theirs.items() if k.startswith(p)}
                for p in ("neck", "head")}  # fmt: skip
        obj = {"epoch": 5, "backbone": {"proj.weight": torch.zeros(2, 2)},
               "neck": with_module(part["neck"]), "head": with_module(part["head"]),
               "optimizer": OPTIMIZER, "rho_best": rho_best}  # fmt: skip
    elif container == "dae_py":  # the DAE's DAE.py
        obj = {"epoch": 3, "i3d": {"logits.conv3d.weight": torch.zeros(2, 2)}, "dae": theirs,
               "optimizer": OPTIMIZER, "rho_best": rho_best}  # fmt: skip
    else:
        raise ValueError(container)
    torch.save(obj, path)
    return path


def same_tensors(a, b) -> None:
    ta, tb = our_tensors(a), our_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.mark.parametrize(
    "name, container",
    [("gdlt", "bare"), ("gdlt", "dataparallel_nested"), ("interaqa", "run_py"),
     ("interaqa", "bare"), ("dae", "dae_py"), ("dae", "dataparallel_nested")],
)  # fmt: skip
def test_an_authors_checkpoint_loads_in_its_container(tmp_path, name, container):
    path = authors_file(tmp_path / "ckpt.pt", name, container)
    target = seeded(name, 1)
    init = read_head_checkpoint(path, target)
    assert init.layout == target.authors_layout.name
    init.apply(target)
    same_tensors(target, seeded(name, 0))  # every tensor, InterAQA's positional table too
    assert init.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert init.provenance()["path"] == str(path.resolve())


def test_the_authors_layout_is_their_model_s(tmp_path):
    """The names and shapes our mapping writes are the authors' (as the parity fixtures list
    them): GDLT's kernel-1 Conv1d weights, InterAQA's neck/head keys, the DAE's nn.Linear."""
    gdlt = to_authors(seeded("gdlt", 0))
    assert gdlt["in_proj.0.weight"].shape == (DIM // 2, DIM, 1)
    assert gdlt["prototype.weight"].shape == (4, 16)
    assert "transformer.decoder.layers.1.multihead_attn.in_proj_weight" in gdlt
    assert "transformer.encoder.norm.weight" in gdlt and "grade_values" not in str(list(gdlt))
    inter = to_authors(seeded("interaqa", 0), shapes={"neck.pos_encoder.pe": [1, 10, DIM]})
    assert inter["neck.pos_encoder.pe"].shape == (1, 10, DIM)
    assert inter["head.layer3_weight.weight"].shape == (1, 256)
    assert "neck.query_embed.weight" not in inter  # the noise overwrites theirs: unused here
    dae = to_authors(seeded("dae", 0))
    assert dae.keys() == {f"{a}.{b}" for a in ("fc1", "fch", "fc2_mean", "fc2_logvar")
                          for b in ("weight", "bias")}  # fmt: skip
    assert dae["fc1.weight"].shape == (24, DIM)  # nn.Linear (out, in)


def test_a_checkpoint_made_by_the_fixture_rule_scores_like_the_authors_model(tmp_path):
    """GDLT: the parity fixture's initial weights, saved as the authors save their model
    (torch.save(model.state_dict()) of a DataParallel model), load and give the outputs the
    authors' code gave (eval mode)."""
    from tests.conftest import needs_shared
    from tests.test_head_parity import FIXTURES, GDLTAdapter, init_weights

    path = FIXTURES / "gdlt_step.pt"
    if not path.is_file():
        needs_shared("fixtures", "heads", "gdlt_step.pt")
    fx = torch.load(path, weights_only=True)
    meta = fx["meta"]
    rule = meta["init_rule"]
    state = init_weights(meta["keys"], meta["shapes"], meta["dtypes"], rule["seed"],
                         rule["scale_log2"])  # fmt: skip
    state |= {k: torch.tensor(0) for k in meta["keys"] if k not in state}  # num_batches_tracked
    torch.save(with_module(state), tmp_path / "gdlt_fisv.pkl")
    adapter = GDLTAdapter(fx)
    head = adapter.build().eval()
    read_head_checkpoint(tmp_path / "gdlt_fisv.pkl", head).apply(head)
    x, mask, _ = adapter.inputs()
    with torch.no_grad():
        out = head(x, mask)
    ref = fx["eval"]["outputs"]
    assert torch.allclose(out["score"], ref["output"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["embed"], ref["embed"], rtol=1e-4, atol=1e-5)


def test_a_pickle_that_needs_full_unpickling_needs_the_flag(tmp_path):
    """The authors' run.py / DAE.py store rho_best as a numpy float64 (scipy's spearmanr):
    refused by torch.load(weights_only=True) unless allow_unsafe_pickle."""
    path = authors_file(tmp_path / "dae.pt", "dae", "dae_py", rho_best=np.float64(0.93))
    with pytest.raises(AqaError, match="allow-unsafe-pickle") as err:
        read_head_checkpoint(path, seeded("dae", 1))
    assert str(path) in str(err.value)
    target = seeded("dae", 1)
    read_head_checkpoint(path, target, allow_unsafe_pickle=True).apply(target)
    same_tensors(target, seeded("dae", 0))


def _edit(theirs: dict, how: str) -> dict:
    theirs = dict(theirs)
    if how == "extra":
        theirs["transformer.encoder.layers.7.linear1.weight"] = torch.zeros(3, 3)
    elif how == "missing":
        del theirs["regressor.bias"]
    elif how == "shape":
        theirs["prototype.weight"] = torch.zeros(5, 16)
    return theirs


@pytest.mark.parametrize(
    "how, expected",
    [("extra", "transformer.encoder.layers.7.linear1.weight"), ("missing", "regressor.bias"),
     ("shape", "prototype.weight (5, 16)")],
)  # fmt: skip
def test_keys_or_shapes_that_do_not_fit_name_the_file_and_the_key(tmp_path, how, expected):
    path = tmp_path / "bad.pkl"
    torch.save(with_module(_edit(to_authors(seeded("gdlt", 0)), how)), path)
    with pytest.raises(AqaError) as err:
        read_head_checkpoint(path, seeded("gdlt", 1))
    assert str(path) in str(err.value) and expected in str(err.value)


def test_files_that_are_not_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(AqaError, match="not found"):
        read_head_checkpoint(tmp_path / "nope.pkl", seeded("gdlt", 1))
    (tmp_path / "text.pkl").write_text("not a checkpoint")
    with pytest.raises(AqaError, match="text.pkl"):
        read_head_checkpoint(tmp_path / "text.pkl", seeded("gdlt", 1))
    torch.save({"epoch": 3, "neck": {}}, tmp_path / "no_head.pt")  # InterAQA without 'head'
    with pytest.raises(AqaError, match="'head' or 'evaluator'"):
        read_head_checkpoint(tmp_path / "no_head.pt", seeded("interaqa", 1))
    with pytest.raises(AqaError, match="no known authors' checkpoint layout"):
        read_head_checkpoint(tmp_path / "text.pkl", build_head("mlp", DIM))


# -- the commands ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt_cache")
    path, scores = make_cache(tmp / "f.h5", n=24, dim=DIM, clips=(4, 10))
    return path, write_labels(tmp / "l.csv", scores)


def write_config(path: Path, name: str, **sections) -> Path:
    cfg = {
        "head": {"name": name, **HEADS[name]},
        "label": {"scale": 100},
        "data": {"clip_num": 6, "train_crop": "random", "test_crop": "full"},
        "train": {"epochs": 1, "batch_size": 6, "threads": 1},
        "eval": {"val_fraction": 0.25, "bootstrap": 50},
        "test": {"batch_size": 4},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path.write_text(yaml.safe_dump(cfg))
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_aqa_evaluate_scores_an_authors_checkpoint(tmp_path, cache):
    features, labels = cache
    ckpt = authors_file(tmp_path / "gdlt.pkl", "gdlt", "dataparallel_nested")
    cfg = write_config(tmp_path / "gdlt.yaml", "gdlt")
    res = invoke("evaluate", "--checkpoint", ckpt, "--config", cfg, "--features", features,
                 "--labels", f"csv:{labels}", "--out", tmp_path / "out")  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["checkpoint"]["layout"] == "gdlt_xuangch"
    assert metrics["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert "baseline" in metrics and (tmp_path / "out/report.md").is_file()
    # the predictions are the seed-0 head's own, each program whole (the authors' test.py)
    from aqa_pipeline.features import read_features

    fs = read_features(features, clips=True)
    head = seeded("gdlt", 0)
    preds = Predictions.read(tmp_path / "out/predictions.csv")
    sel = preds.select("final", "split", 0)
    assert len(sel["pred"]) == 6
    for vid, pred in zip(sel["video_id"], sel["pred"], strict=True):
        i = fs.video_ids.index(vid)
        x = torch.from_numpy(fs.clip_features[fs.clip_offsets[i] : fs.clip_offsets[i + 1]])
        with torch.no_grad():
            want = float(head(x[None].float())["score"][0]) * 100
        assert pred == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize(
    "make, flag, expected",
    [
        ("wrong_keys", False, "transformer.encoder.layers.7.linear1.weight"),
        ("unsafe", False, "--allow-unsafe-pickle"),
        ("missing", False, "not found"),
    ],
)
def test_aqa_evaluate_refuses_bad_checkpoints_with_exit_1(tmp_path, cache, make, flag, expected):
    features, labels = cache
    if make == "wrong_keys":
        ckpt = tmp_path / "gdlt.pkl"
        torch.save(_edit(to_authors(seeded("gdlt", 0)), "extra"), ckpt)
        name = "gdlt"
    elif make == "unsafe":
        ckpt = authors_file(tmp_path / "dae.pt", "dae", "dae_py", rho_best=np.float64(0.9))
        name = "dae"
    else:
        ckpt, name = tmp_path / "absent.pkl", "gdlt"
    cfg = write_config(tmp_path / "c.yaml", name)
    res = invoke("evaluate", "--checkpoint", ckpt, "--config", cfg, "--features", features,
                 "--labels", f"csv:{labels}", "--out", tmp_path / "out")  # fmt: skip
    assert res.exit_code == 1, res.output
    assert str(ckpt) in res.output and expected in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("name, seeds", [("dae", 2), ("gdlt", 1)])
def test_aqa_train_init_from_starts_from_the_checkpoint(tmp_path, cache, name, seeds):
    """With a learning rate of 1e-12 the trained heads stay where they started: at the
    checkpoint's weights, for every seed (stacked seeds for the DAE, one module for GDLT)."""
    features, labels = cache
    source_head = seeded(name, 5)  # not a seed the run initialises
    ckpt = authors_file(tmp_path / "c.pt", name, "dataparallel_nested", head=source_head)
    optim = {"name": "sgd", "lr": 1e-12, "momentum": 0.0}
    cfg = write_config(tmp_path / "c.yaml", name, optim=optim, train={"seeds": seeds})
    res = invoke("train", "--config", cfg, "--features", features, "--labels", f"csv:{labels}",
                 "--run-dir", tmp_path / "run", "--init-from", ckpt)  # fmt: skip
    assert res.exit_code == 0, res.output
    env = json.loads((tmp_path / "run/environment.json").read_text())
    assert env["init_from"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert yaml.safe_load((tmp_path / "run/config.yaml").read_text())["train"]["init_from"] == str(
        ckpt.resolve()
    )
    _, states, _ = load_heads(tmp_path / "run")
    source = dict(source_head.named_parameters())
    finals = [st for (protocol, _, _), st in states.items() if protocol == "final"]
    assert len(finals) == seeds
    for st in finals:
        for key, value in source.items():
            assert torch.allclose(st[key], value.detach(), atol=1e-6), key
    # without it, the seeds start from their own seeded initialisation
    res = invoke("train", "--config", cfg, "--features", features, "--labels", f"csv:{labels}",
                 "--run-dir", tmp_path / "plain")  # fmt: skip
    assert res.exit_code == 0, res.output
    _, plain, _ = load_heads(tmp_path / "plain")
    key = next(iter(source))
    assert not torch.allclose(plain["final", "split", 0][key], source[key].detach(), atol=1e-3)
