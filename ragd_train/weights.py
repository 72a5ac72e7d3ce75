"""A model is ready only when its weights load and are finite: checked before it is declared
ready, switched to (``ragd train use``) or exported."""

from __future__ import annotations

import json
from pathlib import Path

from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import read_json

WIDTH_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


def verify_weights(model_dir: str | Path) -> int:
    """Check every ``*.safetensors`` file under ``model_dir``: it loads (a truncated or empty file
    does not), every tensor is finite, and the word embeddings are as wide as the ``config.json``
    beside them says. Returns the number of tensors; a one-line error naming the file otherwise."""
    import torch
    from safetensors import SafetensorError, safe_open

    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*.safetensors") if not p.name.startswith("."))
    if not files:
        raise RagdTrainError(f"{model_dir}: no model weights (*.safetensors)")
    tensors = 0
    for path in files:
        width = _width(path.parent / "config.json")
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensor = handle.get_tensor(name)
                    tensors += 1
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                        raise RagdTrainError(
                            f"{path}: tensor '{name}' has non-finite values (NaN or inf): the "
                            "training diverged; this model is not usable"
                        )
                    if width and name.endswith("word_embeddings.weight") and tensor.shape[-1] != width:
                        raise RagdTrainError(
                            f"{path}: tensor '{name}' has shape {tuple(tensor.shape)}, but config.json "
                            f"says the model is {width} wide"
                        )
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise RagdTrainError(f"{path}: the weights do not load ({reason})") from None
    return tensors


def _width(config: Path) -> int | None:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return next((data[k] for k in WIDTH_KEYS if isinstance(data.get(k), int)), None)


def check_model_dir(model_dir: str | Path) -> None:
    """A local model directory about to be loaded: its JSON files parse (an error names the file
    and line) and its weights load and are finite (``verify_weights``)."""

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return
    for path in sorted(model_dir.rglob("*.json")):
        if path.name.startswith(".") or "checkpoint" in path.parts:
            continue
        read_json(path)
    verify_weights(model_dir)
