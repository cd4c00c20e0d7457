"""What produced a result: library versions, git commit, host, command line."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
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


def environment() -> dict[str, Any]:
    """Versions, commit, host, time and command: recorded with every cache and run."""
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
