"""What produced a result: library versions, git commit, host, command line."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from aqa_pipeline import __version__

_PACKAGES = ("torch", "torchvision", "pytorchvideo", "av", "h5py", "numpy", "scipy")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "aqa_pipeline": __version__}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the aqa_pipeline checkout, or None outside git."""
    here = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# the CPU features speed figures depend on (bf16 runs at a fraction of float32 without them)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu() -> dict[str, Any]:
    """{"model": name, "cores": usable cores, "flags": those of CPU_FLAGS it has} (Linux's
    /proc/cpuinfo; the model falls back to platform.processor() elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": cores, "flags": [f for f in CPU_FLAGS if f in flags]}


def describe_cpu() -> str:
    """One line for benchmark output: 'MODEL, N cores, avx2 avx512f ...'."""
    c = cpu()
    return f"{c['model']}, {c['cores']} cores, {' '.join(c['flags']) or 'no AVX2'}"


def environment() -> dict[str, Any]:
    """Versions, commit, host, CPU, time and command: recorded with every cache and run."""
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "cpu": cpu(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
