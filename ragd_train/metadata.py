"""training_metadata.json: input hashes, config, package versions, measurements."""

from __future__ import annotations

import hashlib
import platform
import resource
import sys
import time
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

PACKAGES = ("ragd-train", "torch", "sentence-transformers", "transformers", "datasets", "accelerate", "peft")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


def gpu_peak_memory_mb() -> float | None:
    """Peak GPU memory PyTorch allocated in this process, in MiB; ``None`` without CUDA.

    Reads ``torch`` only when something already imported it, so CPU-only callers pay nothing.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def base_metadata(
    kind: str, inputs: dict[str, str | Path | None], config: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Fields every model directory's metadata carries."""
    return {
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {
            name: {"path": str(path), "sha256": sha256_file(path)}
            for name, path in inputs.items()
            if path is not None
        },
        "config": config,
        "seed": seed,
        "versions": package_versions(),
    }


def run_stats(train_time: float, start: float, device: Any) -> dict[str, Any]:
    """The timings, peak memory and device every model's ``training_metadata.json`` records."""
    return {
        "train_time_s": round(train_time, 2),
        "wall_time_s": round(time.monotonic() - start, 2),
        "peak_memory_mb": peak_memory_mb(),
        "gpu_peak_memory_mb": gpu_peak_memory_mb(),
        "device": str(device),
    }
