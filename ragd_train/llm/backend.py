"""Which LoRA backend trains here: mlx on Apple Silicon, unsloth with an NVIDIA GPU, else peft (CPU).

Decided once, where the workflow is read (``rules/llm.smk``); ``RAGD_TRAIN_PLATFORM`` overrides detection.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from pathlib import Path

from ragd_train.errors import InputError

log = logging.getLogger("ragd_train")

BACKENDS = ("mlx", "unsloth", "peft")
PLATFORM_ENV = "RAGD_TRAIN_PLATFORM"  # apple | cuda | cpu: overrides detection (tests, login nodes)
PLATFORMS = {"apple": "mlx", "cuda": "unsloth", "cpu": "peft"}


def detect_platform() -> str:
    """``apple`` (Apple Silicon), ``cuda`` (an NVIDIA driver is present) or ``cpu``.

    Cheap on purpose (no torch import): the Snakefile calls it while it is read. On a cluster's
    login node there is usually no GPU, so set ``llm.backend`` explicitly there.
    """
    forced = os.environ.get(PLATFORM_ENV, "").strip().lower()
    if forced:
        if forced not in PLATFORMS:
            raise InputError(f"must be one of {', '.join(PLATFORMS)}, got {forced!r}", field=PLATFORM_ENV)
        return forced
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "apple"
    if Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


def resolve_backend(requested: str, detected: str | None = None) -> str:
    """The backend that ``llm.backend`` names; ``auto`` follows the platform."""
    if requested in BACKENDS:
        return requested
    if requested != "auto":
        raise InputError(
            f"must be auto or one of {', '.join(BACKENDS)}, got {requested!r}", field="llm.backend"
        )
    return PLATFORMS[detected or detect_platform()]
