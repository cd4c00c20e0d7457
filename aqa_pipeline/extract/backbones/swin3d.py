"""Video Swin Transformer (Liu et al., "Video Swin Transformer", CVPR 2022), torchvision's model.

Loads torchvision state_dicts (swin3d_{t,s,b}-*.pth) and the original mmaction checkpoints of
SwinTransformer/Video-Swin-Transformer ({"meta", "state_dict"} with backbone.* and
cls_head.fc_cls.*, Kinetics-400 or -600 heads), whose keys are renamed to torchvision's.
Features: the final LayerNorm's output (B, T', H', W', C) averaged over (T', H', W') -> C =
8 x embed_dim for four stages (768 for Swin-T/S, 1024 for Swin-B).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models.video import (
    Swin3D_B_Weights,
    Swin3D_S_Weights,
    Swin3D_T_Weights,
    SwinTransformer3d,
)
from torchvision.models.video.swin_transformer import PatchEmbed3d

from aqa_pipeline.errors import AqaError

from .checkpoints import Checkpoint, hub_hash_prefix, load_state_dict_checked, rename_keys
from .registry import Backbone, BackboneSpec, check_clip, register_backbone
from .weights import KINETICS400_CATEGORIES, WeightsEntry, register_weights

Triple = tuple[int, int, int]
_KINETICS_CLASSES = 400

# mmaction (Video-Swin) key -> torchvision key, applied in order.
_MMACTION_RENAMES = (
    (r"^backbone\.", ""),
    (r"^cls_head\.fc_cls\.", "head."),
    (r"^layers\.(\d+)\.blocks\.", lambda m: f"features.{2 * int(m[1])}."),
    (r"^layers\.(\d+)\.downsample\.", lambda m: f"features.{2 * int(m[1]) + 1}."),
    (r"\.mlp\.fc1\.", ".mlp.0."),
    (r"\.mlp\.fc2\.", ".mlp.3."),
)


@dataclass(frozen=True)
class SwinArch:
    """Architecture of a Video Swin model; the defaults are Swin-T with patch 2x4x4, window 8x7x7."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: Triple = (8, 7, 7)
    patch_size: Triple = (2, 4, 4)
    mlp_ratio: float = 4.0
    patch_norm: bool = True  # LayerNorm after the patch embedding

    def __post_init__(self) -> None:
        for field in ("depths", "num_heads", "window_size", "patch_size"):
            object.__setattr__(self, field, tuple(int(v) for v in getattr(self, field)))
        if len(self.depths) != len(self.num_heads):
            raise AqaError(
                f"swin3d: depths {self.depths} and num_heads {self.num_heads} differ in length"
            )
        for stage, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**stage) % heads:
                raise AqaError(
                    f"swin3d: stage {stage} width {self.embed_dim * 2**stage} is not divisible "
                    f"by its {heads} heads"
                )
        if len(self.window_size) != 3 or len(self.patch_size) != 3:
            raise AqaError("swin3d: window_size and patch_size take three values (T, H, W)")

    @property
    def feature_dim(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)


SWIN_T = SwinArch()
SWIN_S = SwinArch(depths=(2, 2, 18, 2))
SWIN_B = SwinArch(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


def _patch_embed_without_norm(patch_size: list[int], embed_dim: int, **_: Any) -> PatchEmbed3d:
    return PatchEmbed3d(patch_size, embed_dim=embed_dim, norm_layer=None)


class VideoSwin(Backbone):
    """Video Swin: clips (B, 3, T, H, W), ImageNet-normalised -> (B, 8 x embed_dim) features."""

    layout = "torchvision"

    def __init__(self, arch: SwinArch = SWIN_T, num_classes: int = _KINETICS_CLASSES) -> None:
        super().__init__()
        model = SwinTransformer3d(
            patch_size=list(arch.patch_size),
            embed_dim=arch.embed_dim,
            depths=list(arch.depths),
            num_heads=list(arch.num_heads),
            window_size=list(arch.window_size),
            mlp_ratio=arch.mlp_ratio,
            stochastic_depth_prob=0.0,  # training only
            num_classes=num_classes or 1,
            norm_layer=partial(nn.LayerNorm, eps=1e-5),
            patch_embed=None if arch.patch_norm else _patch_embed_without_norm,
        )
        # torchvision's modules under torchvision's names, so its state_dicts load unchanged.
        self.patch_embed = model.patch_embed
        self.features = model.features
        self.norm = model.norm
        self.head = model.head if num_classes else None
        self.feature_dim = arch.feature_dim
        self.num_classes = num_classes
        self.arch = asdict(arch)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_clip(x, "swin3d")
        x = self.norm(self.features(self.patch_embed(x)))  # (B, T', H', W', C)
        return x.mean(dim=(1, 2, 3))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        self._require_classifier()
        return self.head(self.forward_features(x))


def mmaction_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Video-Swin mmaction keys (backbone.layers.1.blocks.0.mlp.fc1.weight) to
    torchvision's (features.2.0.mlp.0.weight); cls_head.fc_cls.* becomes head.*."""
    return rename_keys(state_dict, _MMACTION_RENAMES)


def infer_arch(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read what a torchvision-layout state_dict reveals of its architecture (assuming square
    spatial windows). Keys it cannot find are left out."""
    arch: dict[str, Any] = {"patch_norm": "patch_embed.norm.weight" in state_dict}
    proj = state_dict.get("patch_embed.proj.weight")  # (embed_dim, 3, pt, ph, pw)
    if proj is None or proj.ndim != 5:
        return arch
    arch.update(embed_dim=proj.shape[0], patch_size=tuple(proj.shape[2:]))

    depths, num_heads = [], []
    while f"features.{2 * len(depths)}.0.norm1.weight" in state_dict:
        stage = f"features.{2 * len(depths)}"
        depths.append(
            sum(1 for k in state_dict if k.startswith(f"{stage}.") and k.endswith(".norm1.weight"))
        )
        table = state_dict.get(f"{stage}.0.attn.relative_position_bias_table")
        num_heads.append(table.shape[1] if table is not None else 1)
    if depths:
        arch.update(depths=tuple(depths), num_heads=tuple(num_heads))
    fc1 = state_dict.get("features.0.0.mlp.0.weight")
    if fc1 is not None:
        arch["mlp_ratio"] = fc1.shape[0] / arch["embed_dim"]
    table = state_dict.get("features.0.0.attn.relative_position_bias_table")
    index = state_dict.get("features.0.0.attn.relative_position_index")
    if table is not None and index is not None:
        window = _window_size(volume=index.shape[0], table_rows=table.shape[0])
        if window is not None:
            arch["window_size"] = window
    return arch


def _window_size(volume: int, table_rows: int) -> Triple | None:
    """The window (t, s, s) with t*s*s tokens and (2t-1)(2s-1)^2 relative positions."""
    for s in range(1, volume + 1):
        t = volume // (s * s)
        if t * s * s == volume and (2 * t - 1) * (2 * s - 1) ** 2 == table_rows:
            return (t, s, s)
    return None


def _build(checkpoint: Checkpoint | None, arch: SwinArch) -> VideoSwin:
    if checkpoint is None:
        return VideoSwin(arch)
    state_dict = _torchvision_keys(checkpoint)
    head = state_dict.get("head.weight")
    model = VideoSwin(arch, num_classes=0 if head is None else head.shape[0])
    load_state_dict_checked(model, state_dict, checkpoint.path)
    return model


def _torchvision_keys(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    if checkpoint.layout == "mmaction":
        return mmaction_to_torchvision(checkpoint.state_dict)
    return checkpoint.state_dict


def _spec(name: str, arch: SwinArch | None, description: str, url: str | None) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        feature_dim=arch.feature_dim if arch else None,
        normalisation="imagenet",
        min_frames=1,
        description=description,
        layouts=("torchvision", "mmaction"),
        hub_source="torchvision" if url else None,
        hub_url=url,
    )


@register_backbone(
    _spec(
        "swin3d_t",
        SWIN_T,
        "Video Swin-T (Liu et al., CVPR 2022), Kinetics-400 (torchvision swin3d_t or mmaction "
        "swin_tiny_patch244_window877); 768-d final-norm global average",
        Swin3D_T_Weights.DEFAULT.url,
    )
)
def swin3d_t(checkpoint: Checkpoint | None) -> VideoSwin:
    return _build(checkpoint, SWIN_T)


@register_backbone(
    _spec(
        "swin3d_s",
        SWIN_S,
        "Video Swin-S (Liu et al., CVPR 2022), Kinetics-400 (torchvision swin3d_s or mmaction "
        "swin_small_patch244_window877); 768-d final-norm global average",
        Swin3D_S_Weights.DEFAULT.url,
    )
)
def swin3d_s(checkpoint: Checkpoint | None) -> VideoSwin:
    return _build(checkpoint, SWIN_S)


@register_backbone(
    _spec(
        "swin3d_b",
        SWIN_B,
        "Video Swin-B (Liu et al., CVPR 2022), Kinetics-400/600 (torchvision swin3d_b or mmaction "
        "swin_base_patch244_window877, e.g. GDLT's kinetics600_22k); 1024-d final-norm average",
        Swin3D_B_Weights.DEFAULT.url,
    )
)
def swin3d_b(checkpoint: Checkpoint | None) -> VideoSwin:
    return _build(checkpoint, SWIN_B)


@register_backbone(
    _spec(
        "swin3d",
        None,
        "Video Swin (Liu et al., CVPR 2022) of any size: architecture from the keyword arguments, "
        "else read from the checkpoint, else Swin-T; (8 x embed_dim)-d final-norm average",
        None,
    )
)
def swin3d(
    checkpoint: Checkpoint | None,
    *,
    embed_dim: int | None = None,
    depths: tuple[int, ...] | None = None,
    num_heads: tuple[int, ...] | None = None,
    window_size: Triple | None = None,
    patch_size: Triple | None = None,
    mlp_ratio: float | None = None,
    patch_norm: bool | None = None,
) -> VideoSwin:
    """Video Swin whose architecture comes from the arguments given, then from what the
    checkpoint shows, then from Swin-T."""
    given = {
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": window_size,
        "patch_size": patch_size,
        "mlp_ratio": mlp_ratio,
        "patch_norm": patch_norm,
    }
    inferred = infer_arch(_torchvision_keys(checkpoint)) if checkpoint else {}
    arch = SwinArch(**{**inferred, **{k: v for k, v in given.items() if v is not None}})
    return _build(checkpoint, arch)


# --- known weights files ---------------------------------------------------------------------
# All expect ImageNet mean/std on [0, 1]: torchvision's Swin3D_*_Weights transforms
# (VideoClassification, mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)) and the
# Video-Swin configs' img_norm_cfg (mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375]
# on 0-255: the same numbers). Both accept any clip size (torchvision: min_size (1, 1),
# min_temporal_size 1). The Kinetics-400 heads use the alphabetical class order torchvision
# gives its ports of these weights.

_SIZES = {"swin3d_t": SWIN_T, "swin3d_s": SWIN_S, "swin3d_b": SWIN_B}
_TORCHVISION = "pytorch/vision torchvision/models/video/swin_transformer.py"
_TORCHVISION_LICENCE = (
    "not stated for the weights (torchvision: BSD; ported from Video-Swin-Transformer, Apache-2.0)"
)
_VIDEO_SWIN = "SwinTransformer/Video-Swin-Transformer"
_VIDEO_SWIN_LICENCE = f"Apache-2.0 ({_VIDEO_SWIN} LICENSE)"
_VIDEO_SWIN_URL = "https://github.com/SwinTransformer/storage/releases/download/v1.0.4/"

# name, backbone, torchvision weights enum member, file (<model>-<sha256[:8]>.pth), dataset
_TORCHVISION_WEIGHTS = (
    ("swin3d_t_torchvision_k400", "swin3d_t", "Swin3D_T_Weights.KINETICS400_V1",
     "swin3d_t-7615ae03.pth", "Kinetics-400"),
    ("swin3d_s_torchvision_k400", "swin3d_s", "Swin3D_S_Weights.KINETICS400_V1",
     "swin3d_s-da41c237.pth", "Kinetics-400"),
    ("swin3d_b_torchvision_k400_1k", "swin3d_b", "Swin3D_B_Weights.KINETICS400_V1",
     "swin3d_b_1k-24f7c7c6.pth", "Kinetics-400, ImageNet-1K init"),
    ("swin3d_b_torchvision_k400_22k", "swin3d_b", "Swin3D_B_Weights.KINETICS400_IMAGENET22K_V1",
     "swin3d_b_22k-7c6ae6fa.pth", "Kinetics-400, ImageNet-22K init"),
)  # fmt: skip
# name, backbone, file, classes, dataset (the README's Kinetics-400 and -600 tables)
_MMACTION_WEIGHTS = (
    ("swin3d_t_mmaction_k400_1k", "swin3d_t", "swin_tiny_patch244_window877_kinetics400_1k.pth",
     400, "Kinetics-400, ImageNet-1K init"),
    ("swin3d_s_mmaction_k400_1k", "swin3d_s", "swin_small_patch244_window877_kinetics400_1k.pth",
     400, "Kinetics-400, ImageNet-1K init"),
    ("swin3d_b_mmaction_k400_1k", "swin3d_b", "swin_base_patch244_window877_kinetics400_1k.pth",
     400, "Kinetics-400, ImageNet-1K init"),
    ("swin3d_b_mmaction_k400_22k", "swin3d_b", "swin_base_patch244_window877_kinetics400_22k.pth",
     400, "Kinetics-400, ImageNet-22K init"),
    ("swin3d_b_mmaction_k600_22k", "swin3d_b", "swin_base_patch244_window877_kinetics600_22k.pth",
     600, "Kinetics-600, ImageNet-22K init"),
)  # fmt: skip


def _swin_weights(
    name: str, backbone: str, file_name: str, layout: str, num_classes: int, **facts: Any
) -> None:
    register_weights(
        WeightsEntry(
            name=name,
            backbone=backbone,
            file_name=file_name,
            layout=layout,
            num_classes=num_classes,
            categories=KINETICS400_CATEGORIES if num_classes == _KINETICS_CLASSES else None,
            normalisation="imagenet",
            min_frames=1,
            min_size=1,
            arch=asdict(_SIZES[backbone]),
            **facts,
        )
    )


for _name, _backbone, _enum, _file, _dataset in _TORCHVISION_WEIGHTS:
    _swin_weights(
        _name,
        _backbone,
        _file,
        "torchvision",
        _KINETICS_CLASSES,
        dataset=_dataset,
        source=f"{_TORCHVISION} {_enum}",
        url=f"https://download.pytorch.org/models/{_file}",
        licence=_TORCHVISION_LICENCE,
        sha256_prefix=hub_hash_prefix(_file),
    )

for _name, _backbone, _file, _classes, _dataset in _MMACTION_WEIGHTS:
    _swin_weights(
        _name,
        _backbone,
        _file,
        "mmaction",
        _classes,
        dataset=_dataset,
        source=f"{_VIDEO_SWIN} README; config configs/recognition/swin/{_file[:-4]}.py",
        url=_VIDEO_SWIN_URL + _file,
        licence=_VIDEO_SWIN_LICENCE,
    )
