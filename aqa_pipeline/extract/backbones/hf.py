"""Video transformers through Hugging Face transformers: VideoMAE and V-JEPA 2.

The networks are transformers' own classes (VideoMAEModel / VideoMAEForVideoClassification,
VJEPA2Model / VJEPA2ForVideoClassification), loaded from a local snapshot folder: `--weights
DIR`, DIR holding config.json and model.safetensors (or model.safetensors.index.json and its
shards) and, usually, the preprocessor config, as `hf download REPO --local-dir DIR` or
`huggingface_hub.snapshot_download` writes it.
Loading is offline (local_files_only, safetensors only, no remote code); nothing is ever
downloaded. transformers is the optional extra `pip install 'aqa-pipeline[hf]'`; this module
imports it only when such a backbone is built, so listing backbones works without it.

Identity, recorded in the cache (weights_info, see `HFVideoBackbone.weights_details`): the
sha256 of model.safetensors (the sha256 the Hub lists for that LFS file; shards: `Snapshot`),
`config_sha256` (sha256 of config.json as canonical JSON, sorted keys, without
transformers_version / _name_or_path), model_type, the transformers class, the pooling, the
preprocessing and, when the folder shows it, the Hub repository and revision.

Features (B, hidden_size), `arch: {pooling: ...}`:
    mean      mean of the last hidden states over all patch tokens (VideoMAE checkpoints
              without mean pooling apply their final LayerNorm to every token first; V-JEPA 2's
              encoder always ends in a LayerNorm)
    fc_norm   VideoMAE classifiers with use_mean_pooling: fc_norm(mean of tokens), exactly
              the vector the classifier reads
    pooler    V-JEPA 2 classifiers: the attentive pooler's output, what the classifier reads
    auto      (default) the model's own fc_norm or pooler when it has one, else mean

Preprocessing comes from the snapshot, as its weights entry: mean/std from
video_preprocessor_config.json, else preprocessor_config.json (transformers' order), mapped to
the normalisation preset with those numbers (normalisation.PRESETS; other numbers are refused).
Without either file the fallback, with a warning, is ImageNet mean/std: what the original
VideoMAE and V-JEPA 2 training code used, what the published VideoMAE preprocessor configs
state and transformers' VJEPA2VideoProcessor default (transformers' VideoMAE processor classes
default to 0.5 / 0.5 instead; a snapshot that wants that says so in its file). The input size is the model's: VideoMAE
takes exactly config.num_frames frames of image_size x image_size (fixed position table);
V-JEPA 2 any multiple of tubelet_size frames of crop_size x crop_size (its RoPE positions
assume that grid). A recipe sets the geometry (short side and crop, as the preprocessor config
says); clips of another size are refused with a message naming the settings to change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aqa_pipeline.config import canonical_json, did_you_mean
from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.normalisation import PRESETS

from .checkpoints import sha256_file
from .registry import Backbone, BackboneSpec, check_clip, register_backbone
from .weights import SNAPSHOT_LAYOUT, WeightsEntry

log = logging.getLogger(__name__)

LAYOUT = SNAPSHOT_LAYOUT
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"  # sharded weights: model-0000k-of-0000n.safetensors
# transformers reads the video processor's file first, then the image processor's
PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
INSTALL = "pip install 'aqa-pipeline[hf]'"
MIN_TRANSFORMERS = 5
# config.json keys that say which software wrote the file, not what the model computes
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "_commit_hash")
_PRESET_TOLERANCE = 1e-6
MODEL_TYPES = {"videomae": "videomae", "vjepa2": "vjepa2"}  # backbone -> config.json model_type
_HUB_CACHE_DIR = re.compile(
    r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})"
)


# --- the snapshot folder ---------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """What a snapshot's preprocessor config asks of the input.

    file: the file read (None: absent, the ImageNet fallback). mean, std: per channel (R, G, B)
    on RGB in [0, 1]; preset: the normalisation preset with those numbers. short_side: the
    resize's shortest edge; crop: (H, W) of the center crop; None where the file says none.
    """

    file: str | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preset: str
    short_side: int | None = None
    crop: tuple[int, int] | None = None

    def info(self) -> dict[str, Any]:
        """JSON-friendly, for weights_info."""
        return {
            "file": self.file,
            "image_mean": list(self.mean),
            "image_std": list(self.std),
            "normalisation": self.preset,
            "short_side": self.short_side,
            "crop": list(self.crop) if self.crop else None,
        }


@dataclass(frozen=True)
class Snapshot:
    """A local Hugging Face snapshot folder, checked and hashed; what `build` hands the builder.

    path: the folder (resolved). files: {weights file name: its sha256} (model.safetensors, or
    the shards its index names). sha256: the weights' identity: the one file's sha256, or for
    shards the sha256 of `sha256sum` output over them in name order ("<sha256>  <name>\n"
    lines). config: config.json as read; config_sha256: its canonical hash (module docstring).
    keys: the tensor names (from the safetensors headers). origin: {"hub_repo",
    "hub_revision"} where the folder shows them (a huggingface_hub cache path, or --local-dir
    download metadata).
    """

    path: Path
    files: Mapping[str, str]
    config: Mapping[str, Any]
    config_sha256: str
    keys: frozenset[str]
    preprocessing: Preprocessing
    origin: Mapping[str, str] = field(default_factory=dict)
    layout: str = LAYOUT

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type"))

    @property
    def file_name(self) -> str:
        return WEIGHTS_FILE if WEIGHTS_FILE in self.files else INDEX_FILE

    @property
    def sha256(self) -> str:
        if list(self.files) == [WEIGHTS_FILE]:
            return self.files[WEIGHTS_FILE]
        listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(listing.encode()).hexdigest()

    def entry(
        self,
        backbone: str,
        num_classes: int,
        categories: tuple[str, ...] | None,
        min_frames: int,
        min_size: int,
    ) -> WeightsEntry:
        """This snapshot as a `WeightsEntry` (not registered): its normalisation is the
        preprocessor config's, its name hf_<model_type>_<sha256[:8]>."""
        repo = self.origin.get("hub_repo")
        return WeightsEntry(
            name=f"hf_{re.sub(r'[^a-z0-9_]', '_', self.model_type.lower())}_{self.sha256[:8]}",
            backbone=backbone,
            file_name=self.file_name,
            layout=LAYOUT,
            num_classes=num_classes,
            categories=categories,
            normalisation=self.preprocessing.preset,
            min_frames=min_frames,
            min_size=min_size,
            source=f"Hugging Face {repo}" if repo else f"Hugging Face snapshot {self.path}",
            dataset="see the model card",
            licence="see the model card",
            sha256=self.sha256,
        )


def read_snapshot(path: str | Path, backbone: str) -> Snapshot:
    """Check that `path` is a snapshot folder of the model type `backbone` loads, then hash it.

    Every check that needs no reading of the weights comes first (AqaError naming the path and
    what is missing); then transformers must be importable; then model.safetensors is hashed.
    """
    model_type = MODEL_TYPES[backbone]
    path = Path(path).expanduser()
    example = "e.g. made with `hf download REPO --local-dir DIR`"
    if not path.exists():
        raise AqaError(
            f"{path}: weights folder not found (backbone {backbone!r} loads a "
            f"Hugging Face snapshot folder holding {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    if not path.is_dir():
        raise AqaError(
            f"{path}: is a file; backbone {backbone!r} loads a Hugging Face snapshot folder "
            f"holding {CONFIG_FILE} and {WEIGHTS_FILE} ({example}): pass the folder"
        )
    weights = WEIGHTS_FILE if (path / WEIGHTS_FILE).is_file() else INDEX_FILE
    missing = [f for f in (CONFIG_FILE, weights) if not (path / f).is_file()]
    missing = [WEIGHTS_FILE if f == INDEX_FILE else f for f in missing]
    if missing:
        raise AqaError(
            f"{path}: not a complete Hugging Face snapshot: {' and '.join(missing)} "
            f"missing{_found(path, missing)}"
        )
    config = _read_json(path / CONFIG_FILE)
    if config.get("model_type") != model_type:
        other = [b for b, t in MODEL_TYPES.items() if t == config.get("model_type")]
        raise AqaError(
            f"{path / CONFIG_FILE}: model_type is {config.get('model_type')!r}; backbone "
            f"{backbone!r} loads {model_type!r} snapshots"
            + (f" (use --backbone {other[0]})" if other else "")
        )
    preprocessing = read_preprocessing(path)
    names = [WEIGHTS_FILE] if weights == WEIGHTS_FILE else _shards(path / INDEX_FILE)
    transformers_module(backbone)  # the dependency, before the hashing of large files
    keys = frozenset().union(*(_tensor_names(path / name) for name in names))
    return Snapshot(
        path=path.resolve(),
        files={name: sha256_file(path / name) for name in names},
        config=config,
        config_sha256=config_sha256(config),
        keys=keys,
        preprocessing=preprocessing,
        origin=_hub_origin(path),
    )


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of a config.json mapping as canonical JSON, without the keys naming the software
    that wrote it (transformers_version, _name_or_path, _commit_hash)."""
    kept = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(canonical_json(kept).encode()).hexdigest()


def read_preprocessing(path: Path) -> Preprocessing:
    """The preprocessing a snapshot folder states (module docstring), or the ImageNet fallback."""
    for name in PREPROCESSOR_FILES:
        if (path / name).is_file():
            return _parse_preprocessor(path / name)
    log.warning(
        "%s: no %s; using ImageNet mean/std (what the original VideoMAE and V-JEPA 2 code used)",
        path,
        " or ".join(PREPROCESSOR_FILES),
    )
    mean, std = PRESETS["imagenet"]
    return Preprocessing(file=None, mean=mean, std=std, preset="imagenet")


def _parse_preprocessor(file: Path) -> Preprocessing:
    cfg = _read_json(file)
    if not cfg.get("do_normalize", True):
        raise AqaError(
            f"{file}: do_normalize is false; aqa-pipeline normalises with one of the "
            f"presets {', '.join(PRESETS)}"
        )
    rescale = cfg.get("rescale_factor", 1 / 255) if cfg.get("do_rescale", True) else 1.0
    if not math.isclose(float(rescale), 1 / 255, rel_tol=1e-9):
        raise AqaError(
            f"{file}: rescale_factor {rescale} (do_rescale {cfg.get('do_rescale')}); "
            "aqa-pipeline handles RGB rescaled to [0, 1] (1/255) only"
        )
    mean, std = (_triple(cfg.get(k), file, k) for k in ("image_mean", "image_std"))
    preset = next(
        (
            name
            for name, (m, s) in PRESETS.items()
            if all(
                math.isclose(a, b, abs_tol=_PRESET_TOLERANCE)
                for a, b in zip(mean + std, m + s, strict=True)
            )
        ),
        None,
    )
    if preset is None:
        known = "; ".join(f"{n}: mean {m}, std {s}" for n, (m, s) in PRESETS.items())
        raise AqaError(
            f"{file}: image_mean {list(mean)} / image_std {list(std)} match no "
            f"normalisation preset aqa-pipeline applies ({known})"
        )
    size = cfg.get("size")
    short_side = size if isinstance(size, int) else (size or {}).get("shortest_edge")
    crop = cfg.get("crop_size")
    if isinstance(crop, int):
        crop = (crop, crop)
    elif isinstance(crop, Mapping) and "height" in crop:
        crop = (int(crop["height"]), int(crop.get("width", crop["height"])))
    elif crop is None and isinstance(size, int):
        crop = (size, size)  # the old feature extractors cropped to `size`
    if not cfg.get("do_center_crop", True):
        crop = None
    return Preprocessing(
        file=file.name,
        mean=mean,
        std=std,
        preset=preset,
        short_side=int(short_side) if short_side else None,
        crop=tuple(crop) if crop else None,
    )


def _triple(value: Any, file: Path, key: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not (isinstance(value, list) and len(value) == 3):
        raise AqaError(f"{file}: {key} must be three numbers (R, G, B), got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AqaError(f"{file}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise AqaError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def _shards(index: Path) -> list[str]:
    """The shard files a model.safetensors.index.json names, each checked to exist."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise AqaError(f"{index}: no weight_map (tensor name -> shard file)")
    names = sorted(set(map(str, weight_map.values())))
    absent = [n for n in names if not (index.parent / n).is_file()]
    if absent:
        raise AqaError(
            f"{index.parent}: shard {absent[0]} named in {INDEX_FILE} is missing "
            f"({len(absent)} of {len(names)} shards missing)"
        )
    return names


def _tensor_names(file: Path) -> frozenset[str]:
    """The tensor names in a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as f:
            return frozenset(f.keys())
    except Exception as exc:  # not safetensors, truncated header, ...
        raise AqaError(f"{file}: not a readable safetensors file ({exc})") from None


def _found(path: Path, missing: list[str]) -> str:
    names = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    hint = ""
    if WEIGHTS_FILE in missing and any(n.startswith("pytorch_model") for n in names):
        hint = (
            f"; the weights are there only as pickle files, which can run code when loaded: "
            f"download the repository's {WEIGHTS_FILE} (some have it in a refs/pr/N revision, "
            f"`hf download REPO --revision refs/pr/N`)"
        )
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f" (the folder holds: {shown or 'nothing'}){hint}"


def _hub_origin(path: Path) -> dict[str, str]:
    """{"hub_repo", "hub_revision"} as far as the folder shows them."""
    match = _HUB_CACHE_DIR.search(path.resolve().as_posix())
    if match:
        return {"hub_repo": f"{match['org']}/{match['name']}", "hub_revision": match["rev"]}
    meta = path / ".cache" / "huggingface" / "download" / f"{CONFIG_FILE}.metadata"
    with contextlib.suppress(OSError, IndexError):
        revision = meta.read_text().splitlines()[0].strip()
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            return {"hub_revision": revision}
    return {}


# --- transformers ----------------------------------------------------------------------------


def transformers_module(backbone: str) -> Any:
    """The transformers package, or an AqaError saying what to install."""
    try:
        import transformers
    except ImportError:
        raise AqaError(
            f"backbone {backbone!r} needs Hugging Face transformers, which is not installed: "
            f"{INSTALL}"
        ) from None
    major = int(re.match(r"\d+", transformers.__version__)[0])
    if major < MIN_TRANSFORMERS:
        raise AqaError(
            f"backbone {backbone!r} needs transformers >= {MIN_TRANSFORMERS}, found "
            f"{transformers.__version__}: {INSTALL}"
        )
    return transformers


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """transformers' load reports and progress bars off (our errors say what matters)."""
    hf_logging = transformers.utils.logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(transformers: Any, cls: Any, snapshot: Snapshot, unused_prefixes: tuple[str, ...]) -> Any:
    """`cls.from_pretrained` on the snapshot folder, offline, float32, SDPA attention; any
    weight the model needs and the file lacks is an AqaError (transformers would draw it at
    random), except under `unused_prefixes` (modules features never run)."""
    with _quiet(transformers):
        try:
            model, info = cls.from_pretrained(
                snapshot.path,
                local_files_only=True,
                use_safetensors=True,
                dtype=torch.float32,
                attn_implementation="sdpa",
                output_loading_info=True,
            )
        except Exception as exc:
            raise AqaError(
                f"{snapshot.path}: transformers could not load it as "
                f"{cls.__name__} ({type(exc).__name__}: {exc})"
            ) from None
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(unused_prefixes))
    if missing or info["mismatched_keys"]:
        shown = ", ".join(missing[:5] or [str(k) for k in list(info["mismatched_keys"])[:5]])
        raise AqaError(
            f"{snapshot.path / WEIGHTS_FILE}: the weights do not fit {cls.__name__} "
            f"as {CONFIG_FILE} describes it ({len(missing)} missing, "
            f"{len(info['mismatched_keys'])} of another shape; e.g. {shown})"
        )
    return model


def _random_model(cls: Any, config_cls: Any, overrides: Mapping[str, Any], backbone: str) -> Any:
    """`cls(config_cls(**overrides))`: weights drawn from the (seeded) global RNG."""
    known = set(config_cls().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise AqaError(
            f"backbone {backbone!r}: arch.config has no key {unknown[0]!r}"
            f"{did_you_mean(unknown[0], known)} ({config_cls.__name__})"
        )
    try:
        config = config_cls(**overrides, attn_implementation="sdpa")
    except Exception as exc:
        raise AqaError(
            f"backbone {backbone!r}: arch.config {dict(overrides)} is not a valid "
            f"{config_cls.__name__} ({exc})"
        ) from None
    return cls(config)


# --- the backbones ---------------------------------------------------------------------------


class HFVideoBackbone(Backbone):
    """A transformers video model: clips (B, 3, T, H, W), normalised -> (B, hidden_size).

    `model` is the transformers model as loaded (a base model, or a classifier wrapping one
    under `base_prefix`); forward_features runs its base model on the clips as (B, T, 3, H, W)
    and pools the last hidden states (module docstring).
    """

    layout = LAYOUT
    backbone_name: str
    base_prefix: str  # attribute of a classifier that holds the base model
    head_pooling: str  # "fc_norm" / "pooler": the classifier's own pooling

    def __init__(self, model: Any, pooling: str, snapshot: Snapshot | None) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.is_classifier = hasattr(model, "classifier")
        own = self._own_pooling()
        choices = ("auto", "mean", self.head_pooling)
        if pooling not in choices:
            raise AqaError(
                f"backbone {self.backbone_name!r}: arch.pooling must be one of "
                f"{', '.join(choices)}, got {pooling!r}"
            )
        if pooling == self.head_pooling and own is None:
            raise AqaError(
                f"backbone {self.backbone_name!r}: pooling {pooling!r} needs a snapshot of "
                f"{type(model).__name__.replace('Model', 'ForVideoClassification')} with its "
                f"{self.head_pooling}; these weights ({type(model).__name__}) have none: use "
                "pooling: mean"
            )
        self.pooling = (own or "mean") if pooling == "auto" else pooling
        config = model.config
        self.feature_dim = int(config.hidden_size)
        self.num_classes = int(config.num_labels) if self.is_classifier else 0
        labels = getattr(config, "id2label", None) or {}
        self.categories = (
            tuple(labels[i] for i in range(self.num_classes))
            if self.is_classifier and all(i in labels for i in range(self.num_classes))
            else None
        )
        self.snapshot = snapshot
        self.config_sha256 = snapshot.config_sha256 if snapshot else config_sha256(config.to_dict())
        self.arch = {"pooling": self.pooling, "class": type(model).__name__, **self._input_arch()}

    @property
    def base(self) -> Any:
        """The base model (VideoMAEModel / VJEPA2Model) inside `model`."""
        return getattr(self.model, self.base_prefix) if self.is_classifier else self.model

    def _own_pooling(self) -> str | None:
        raise NotImplementedError

    def _input_arch(self) -> dict[str, Any]:
        raise NotImplementedError

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> last hidden states (B, N, hidden_size)."""
        raise NotImplementedError

    def _head_pool(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) normalised -> (B, hidden_size) pooled as `self.pooling` says."""
        tokens = self._tokens(x)
        if self.pooling == "mean":
            return tokens.mean(dim=1)
        return self._head_pool(tokens)

    def weights_details(self) -> dict[str, Any]:
        """model_type, config_sha256, class, pooling, preprocessing and Hub origin."""
        import transformers

        details = {
            "model_type": self.model.config.model_type,
            "config_sha256": self.config_sha256,
            "architecture": type(self.model).__name__,
            "pooling": self.pooling,
            "transformers_version": transformers.__version__,
        }
        if self.snapshot is not None:
            details["weights_files"] = dict(self.snapshot.files)
            details["preprocessor"] = self.snapshot.preprocessing.info()
            details.update(self.snapshot.origin)
        return details

    def loaded_entry(self) -> WeightsEntry | None:
        """The snapshot as a weights entry (its preprocessing and identity); None: random."""
        if self.snapshot is None:
            return None
        return self.snapshot.entry(
            self.backbone_name, self.num_classes, self.categories, self.min_frames, self.min_size
        )

    def check_input(self, frames: int, size: tuple[int, int]) -> None:
        self._check(torch.empty((1, 3, frames, *size), device="meta"))

    def _too_small(self, x: torch.Tensor, needs: str, settings: str) -> AqaError:
        t, h, w = x.shape[2:]
        return AqaError(
            f"{self.backbone_name}: clips of {t}x{h}x{w} (T x H x W); these weights "
            f"take {needs}: set {settings}"
        )


class VideoMAE(HFVideoBackbone):
    """VideoMAE: exactly config.num_frames frames of config.image_size (fixed position table)."""

    backbone_name = "videomae"
    base_prefix = "videomae"
    head_pooling = "fc_norm"

    def _own_pooling(self) -> str | None:
        return "fc_norm" if getattr(self.model, "fc_norm", None) is not None else None

    def _input_arch(self) -> dict[str, Any]:
        cfg = self.model.config
        size = cfg.image_size
        self.input_size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        self.num_frames = int(cfg.num_frames)
        self.min_frames, self.min_size = self.num_frames, min(self.input_size)
        return {"num_frames": self.num_frames, "image_size": list(self.input_size)}

    def _check(self, x: torch.Tensor) -> None:
        check_clip(x, self.backbone_name)
        if x.shape[2] != self.num_frames or tuple(x.shape[3:]) != self.input_size:
            h, w = self.input_size
            raise self._too_small(
                x,
                f"exactly {self.num_frames} frames of {h}x{w} ({CONFIG_FILE} num_frames, "
                f"image_size)",
                f"sampling.clip_len={self.num_frames} and a preprocess crop "
                f"(or squash) of [{h}, {w}]",
            )

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.base(pixel_values=x.transpose(1, 2)).last_hidden_state

    def _head_pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.fc_norm(tokens.mean(dim=1))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes): the classifier snapshot's own forward."""
        self._require_classifier()
        self._check(x)
        return self.model(pixel_values=x.transpose(1, 2)).logits


class VJEPA2(HFVideoBackbone):
    """V-JEPA 2: a multiple of tubelet_size frames of crop_size x crop_size (encoder only; the
    predictor is never run)."""

    backbone_name = "vjepa2"
    base_prefix = "vjepa2"
    head_pooling = "pooler"

    def _own_pooling(self) -> str | None:
        return "pooler" if getattr(self.model, "pooler", None) is not None else None

    def _input_arch(self) -> dict[str, Any]:
        cfg = self.model.config
        self.input_size = (int(cfg.crop_size), int(cfg.crop_size))
        self.tubelet = int(cfg.tubelet_size)
        self.min_frames, self.min_size = self.tubelet, int(cfg.crop_size)
        return {
            "frames_per_clip": int(cfg.frames_per_clip),
            "crop_size": int(cfg.crop_size),
            "tubelet_size": self.tubelet,
        }

    def _check(self, x: torch.Tensor) -> None:
        check_clip(x, self.backbone_name)
        t = x.shape[2]
        if t % self.tubelet or tuple(x.shape[3:]) != self.input_size:
            h = self.input_size[0]
            raise self._too_small(
                x,
                f"a multiple of {self.tubelet} frames of {h}x{h} ({CONFIG_FILE} tubelet_size, "
                f"crop_size)",
                f"sampling.clip_len (e.g. {self.model.config.frames_per_clip}) "
                f"and a preprocess crop (or squash) of [{h}, {h}]",
            )

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        out = self.base(pixel_values_videos=x.transpose(1, 2), skip_predictor=True)
        return out.last_hidden_state

    def _head_pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.pooler(tokens)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes): the classifier snapshot's own forward."""
        self._require_classifier()
        self._check(x)
        return self.model(pixel_values_videos=x.transpose(1, 2)).logits


def _build(
    kind: type[HFVideoBackbone],
    snapshot: Snapshot | None,
    pooling: str,
    config: Mapping[str, Any] | None,
    classes: tuple[str, str, str],
    classifier_key: str,
    unused_prefixes: tuple[str, ...] = (),
) -> HFVideoBackbone:
    """classes: names of the config, base model and classifier classes in transformers."""
    name = kind.backbone_name
    transformers = transformers_module(name)
    config_cls, base_cls, classifier_cls = (getattr(transformers, c) for c in classes)
    if snapshot is None:
        model = _random_model(base_cls, config_cls, config or {}, name)
    else:
        if config:
            raise AqaError(
                f"backbone {name!r}: arch.config is for --random-init only; with "
                f"weights the architecture is {snapshot.path / CONFIG_FILE}"
            )
        cls = classifier_cls if classifier_key in snapshot.keys else base_cls
        model = _load(transformers, cls, snapshot, unused_prefixes)
    return kind(model, pooling, snapshot)


def _spec(name: str, description: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        feature_dim=None,  # hidden_size of the snapshot
        normalisation="imagenet",  # random init; a snapshot's comes from its preprocessor config
        min_frames=2,  # the tubelet; a snapshot's own minimum is checked when it is built
        description=description,
        layouts=(LAYOUT,),
        weights_kind="hf_snapshot",
    )


@register_backbone(
    _spec(
        "videomae",
        "VideoMAE (Tong et al., NeurIPS 2022) via transformers, from a local Hugging Face "
        f"snapshot folder ({INSTALL}); hidden_size-d mean of the patch tokens, or fc_norm",
    )
)
def videomae(
    snapshot: Snapshot | None, *, pooling: str = "auto", config: dict[str, Any] | None = None
) -> VideoMAE:
    """VideoMAEModel, or VideoMAEForVideoClassification when the snapshot has a classifier.
    pooling: auto / mean / fc_norm. config: VideoMAEConfig fields, for --random-init only
    (default: ViT-B, 16 frames of 224 x 224)."""
    return _build(
        VideoMAE,
        snapshot,
        pooling,
        config,
        ("VideoMAEConfig", "VideoMAEModel", "VideoMAEForVideoClassification"),
        classifier_key="classifier.weight",
    )


@register_backbone(
    _spec(
        "vjepa2",
        "V-JEPA 2 (Assran et al., 2025) encoder via transformers, from a local Hugging Face "
        f"snapshot folder ({INSTALL}); hidden_size-d mean of the patch tokens, or the "
        "classifiers' attentive pooler",
    )
)
def vjepa2(
    snapshot: Snapshot | None, *, pooling: str = "auto", config: dict[str, Any] | None = None
) -> VJEPA2:
    """VJEPA2Model, or VJEPA2ForVideoClassification when the snapshot has a classifier.
    pooling: auto / mean / pooler. config: VJEPA2Config fields, for --random-init only
    (default: ViT-L, crop 256). The predictor's weights may be absent: features never run it."""
    return _build(
        VJEPA2,
        snapshot,
        pooling,
        config,
        ("VJEPA2Config", "VJEPA2Model", "VJEPA2ForVideoClassification"),
        classifier_key="pooler.query_tokens",
        unused_prefixes=("predictor.", "vjepa2.predictor."),
    )
