"""Running a backbone on batches of uint8 clips: device transfer, optional resize and crop
on a device (native-size clips), normalisation, mixed precision, channels_last_3d, and a
retry with half the batch on out-of-memory."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from torch import nn

from aqa_pipeline.errors import AqaError
from aqa_pipeline.extract.preprocess import Preprocess, normalize_clips, preprocess_clips

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """A torch device from a command-line value; AqaError naming `option` when it is not a
    device or CUDA is not available."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AqaError(f"{option} {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise AqaError(f"{option} {name!r}: not a device (cpu, cuda, cuda:N)") from None


def resolve_amp(amp: str, device: torch.device) -> str:
    """'auto' -> bf16 on GPUs that support it, else fp16 on CUDA; none on CPU."""
    if amp == "auto":
        if device.type != "cuda":
            return "none"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("none", *AMP_DTYPES):
        raise AqaError(f"amp must be auto, none, bf16 or fp16, got {amp!r}")
    return amp


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc)


class ClipEngine:
    """Turns uint8 clips (B, T, H, W, 3) into float32 features (B, D) on `device`.

    preprocess: when given, clips arrive at native size and are resized and cropped by
    `preprocess_clips` on `preprocess_device` (default: `device`) before normalisation."""

    def __init__(
        self,
        backbone: nn.Module,
        device: torch.device,
        normalize: str,
        amp: str = "none",
        channels_last: bool = False,
        compile: bool = False,
        preprocess: Preprocess | None = None,
        preprocess_device: torch.device | None = None,
    ):
        self.device = device
        self.preprocess = preprocess
        self.preprocess_device = preprocess_device or device
        self.normalize = normalize
        self.amp = amp
        self.channels_last = channels_last and device.type == "cuda"
        self.backbone = backbone.to(device).eval()
        if self.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last_3d)
        self.forward = backbone.forward_features
        if compile:
            self.forward = torch.compile(backbone.forward_features)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.max_batch: int | None = None  # lowered after an out-of-memory error

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def _run(self, clips: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = clips.to(self.preprocess_device, non_blocking=True)
            clips = preprocess_clips(x, self.preprocess)
        x = clips.to(self.device, non_blocking=True)
        x = normalize_clips(x, self.normalize)
        x = x.contiguous(
            memory_format=torch.channels_last_3d if self.channels_last else torch.contiguous_format
        )
        with torch.inference_mode(), self._autocast():
            return self.forward(x).float()

    def features(self, clips: torch.Tensor) -> np.ndarray:
        """(B, T, H, W, 3) uint8 -> (B, D) float32; on OOM, retries in halves."""
        step = len(clips) if self.max_batch is None else min(self.max_batch, len(clips))
        out = []
        i = 0
        while i < len(clips):
            chunk = clips[i : i + step]
            try:
                out.append(self._run(chunk).cpu())
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_oom(exc) or step == 1:
                    raise
                step = max(1, step // 2)
                self.max_batch = step
                log.warning("out of memory: retrying with batch size %d", step)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            i += len(chunk)
        return torch.cat(out).numpy()
