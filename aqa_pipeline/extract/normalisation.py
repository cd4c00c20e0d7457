"""Normalisation presets: the one definition of the (mean, std) each preset applies.

A preset maps RGB in [0, 1] to x' = (x - mean) / std per channel (R, G, B):

    imagenet   ImageNet mean/std: torchvision and mmaction Video Swin, MUSDL, DAE, CoRe recipes
    kinetics   mean 0.45, std 0.225: pytorchvideo
    minus1_1   mean 0.5, std 0.5, i.e. RGB scaled to [-1, 1]: the I3D authors (DeepMind)

Which preset a set of weights expects is recorded in its `WeightsEntry` (backbones/weights.py).
"""

from __future__ import annotations

from aqa_pipeline.errors import AqaError

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), three values each

PRESETS: dict[str, Stats] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "kinetics": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "minus1_1": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def check_preset(name: object, field: str = "normalize") -> str:
    """Return `name` if it is a preset, else raise AqaError naming `field` and the presets."""
    if name not in PRESETS:
        raise AqaError(
            f"{field}: unknown normalisation preset {name!r}; choose from {', '.join(PRESETS)}"
        )
    return str(name)
