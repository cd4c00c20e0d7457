"""I3D with a ResNet-50 trunk, as built and trained by pytorchvideo (I3D_8x8_R50.pyth).

pytorchvideo's model is `blocks`: stem, res2, a (2, 1, 1) temporal max pool, res3, res4, res5 and
the head (blocks[6]: average pool (4, 7, 7) stride 1 -> dropout -> linear -> global mean).
Features: res5 -> the head's average pool -> mean over (T', H', W') -> 2048, i.e. the vector the
head's linear layer turns into the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoints import Checkpoint, load_state_dict_checked
from .registry import Backbone, BackboneSpec, check_clip, register_backbone
from .weights import KINETICS400_CATEGORIES, WeightsEntry, register_weights

_HEAD_POOL = (4, 7, 7)
_MIN_FRAMES, _MIN_SIZE = 8, 193  # smallest clip whose res5 output fills the head pool
_KINETICS_CLASSES = 400
_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/I3D_8x8_R50.pyth"


class I3dR50(Backbone):
    """pytorchvideo I3D-R50: clips (B, 3, T, H, W), normalised with mean 0.45 and std 0.225,
    -> (B, 2048) features. Trained on 8-frame clips (sampling rate 8) at 224x224."""

    feature_dim = 2048
    layout = "pytorchvideo"

    def __init__(self, num_classes: int = _KINETICS_CLASSES) -> None:
        super().__init__()
        # Imported here: pytorchvideo pulls in fvcore and is only needed for this backbone.
        # (Only pytorchvideo.models: pytorchvideo.transforms fails with current torchvision.)
        from pytorchvideo.models.resnet import create_res_basic_head, create_resnet

        self.num_classes = num_classes
        self.arch = {"depth": 50, "head_pool": list(_HEAD_POOL)}
        net = create_resnet(
            model_depth=50,
            model_num_class=num_classes,
            stem_conv_kernel_size=(5, 7, 7),
            stage1_pool=nn.MaxPool3d,
            stage_conv_a_kernel_size=(
                (3, 1, 1),
                [(3, 1, 1), (1, 1, 1)],
                [(3, 1, 1), (1, 1, 1)],
                [(1, 1, 1), (3, 1, 1)],
            ),
            head_pool_kernel_size=_HEAD_POOL,
            head=create_res_basic_head if num_classes else None,
        )
        self.blocks = net.blocks  # keys blocks.0 ... blocks.6, as in the checkpoint
        self.pool = nn.AvgPool3d(_HEAD_POOL, stride=1)  # = blocks[6].pool, without the head

    def _res5(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> res5 output (B, 2048, T/2, H/32, W/32)."""
        check_clip(x, "i3d_r50", _MIN_FRAMES, _MIN_SIZE)
        for block in self.blocks[:6]:
            x = block(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self._res5(x)).mean(dim=(2, 3, 4))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        self._require_classifier()
        return self.blocks[6](self._res5(x))


@register_backbone(
    BackboneSpec(
        name="i3d_r50",
        feature_dim=2048,
        normalisation="kinetics",
        min_frames=_MIN_FRAMES,
        min_size=_MIN_SIZE,
        description=(
            "pytorchvideo I3D ResNet-50 (I3D of Carreira & Zisserman, CVPR 2017, on a ResNet-50 "
            "trunk), Kinetics-400 8x8 I3D_8x8_R50.pyth (73.3% top-1); 2048-d res5 average pool"
        ),
        layouts=("pytorchvideo",),
        hub_source="pytorchvideo",
        hub_url=_URL,
    )
)
def i3d_r50(checkpoint: Checkpoint | None) -> I3dR50:
    """I3D-R50; the classifier (blocks.6.proj) is optional in the checkpoint."""
    if checkpoint is None:
        return I3dR50()
    proj = checkpoint.state_dict.get("blocks.6.proj.weight")
    model = I3dR50(num_classes=0 if proj is None else proj.shape[0])
    load_state_dict_checked(model, checkpoint.state_dict, checkpoint.path)
    return model


# pytorchvideo normalises with mean 0.45, std 0.225 (its tutorials, docs/source/transforms.md and
# tutorials/video_classification_example/train.py defaults).
register_weights(
    WeightsEntry(
        name="i3d_r50_pytorchvideo_k400",
        backbone="i3d_r50",
        file_name="I3D_8x8_R50.pyth",
        layout="pytorchvideo",
        num_classes=_KINETICS_CLASSES,
        categories=KINETICS400_CATEGORIES,
        normalisation="kinetics",
        min_frames=_MIN_FRAMES,
        min_size=_MIN_SIZE,
        dataset="Kinetics-400, 8x8 clips (73.27% top-1)",
        source="facebookresearch/pytorchvideo model zoo: pytorchvideo/models/hub/resnet.py "
        "checkpoint_paths['i3d_r50'], docs/source/model_zoo.md",
        url=_URL,
        licence="Apache-2.0 (facebookresearch/pytorchvideo LICENSE)",
        arch={"depth": 50, "head_pool": list(_HEAD_POOL)},
    )
)
