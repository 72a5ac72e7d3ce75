"""Which arithmetic a model runs in: bf16 autocast where the hardware does bf16 natively, else fp32."""

from __future__ import annotations

import contextlib
import functools
from typing import Any


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` (``cpu``, ``cuda``, ``mps``) computes bf16 natively: a CPU with
    AVX512-BF16 or AMX, a CUDA GPU that supports bf16. Elsewhere bf16 is emulated and slower."""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_precision(requested: str, device_type: str = "cpu") -> str:
    """``auto`` -> ``bf16`` where the device does bf16 natively, else ``fp32``; others unchanged."""
    if requested == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    return requested


def autocast(precision: str, device_type: str = "cpu") -> Any:
    """The context to run a forward pass in: bf16 autocast, or nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16)
