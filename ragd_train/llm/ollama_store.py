"""The chat model the user already has: the GGUF blob behind an Ollama name, read in Ollama's store.

Ollama keeps every pulled model under ``~/.ollama/models`` (``$OLLAMA_MODELS`` overrides it):
``manifests/<registry>/<namespace>/<model>/<tag>`` is a JSON manifest (schemaVersion 2) whose
``layers`` list the model's parts by media type and digest; the weights are the layer of media type
``application/vnd.ollama.image.model``, stored as ``blobs/sha256-<hex>`` (a GGUF file). Names follow
Ollama's rules: ``smollm2`` is ``registry.ollama.ai/library/smollm2:latest``, ``user/model:tag`` is
in namespace ``user``, ``host/user/model:tag`` on another registry.

Nothing here writes into the store or downloads anything: the blob is checked (size and sha256)
and given the ``.gguf`` name transformers wants through a symlink in a temporary folder.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError

log = logging.getLogger("ragd_train")

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"


def ollama_models_dir() -> Path:
    """Ollama's store: ``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    env = os.environ.get("OLLAMA_MODELS", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def looks_like_ollama_name(name: str) -> bool:
    """A name Ollama could hold (``model``, ``model:tag``, ``ns/model:tag``, ``host/ns/model:tag``),
    not a path."""
    name = name.strip()
    if not name or name.startswith((".", "/", "~")) or "\\" in name or name.endswith(".gguf"):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+){0,2}(:[\w.\-]+)?", name) is not None


def manifest_path(name: str, store: Path | None = None) -> Path:
    """Where Ollama writes the manifest of ``name``."""
    name = name.strip()
    path, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = path.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    return (store or ollama_models_dir()).joinpath("manifests", *parts, tag or DEFAULT_TAG)


@dataclass(frozen=True)
class OllamaModel:
    """One model in Ollama's store: its manifest and its GGUF blob."""

    name: str
    manifest: Path
    digest: str  # sha256:<hex>
    size: int
    blob: Path

    def metadata(self) -> dict[str, Any]:
        return {
            "source": "ollama",
            "name": self.name,
            "manifest": str(self.manifest),
            "blob": str(self.blob),
            "digest": self.digest,
            "size": self.size,
        }


def _model_layer(manifest: Path) -> dict[str, Any]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RagdTrainError(f"{manifest}: not a readable Ollama manifest ({exc})") from None
    layers = data.get("layers") if isinstance(data, dict) else None
    models = [
        layer
        for layer in layers or []
        if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE
    ]
    if not models:
        raise RagdTrainError(f"{manifest}: the Ollama manifest has no {MODEL_MEDIA_TYPE} layer")
    layer = models[0]
    digest = str(layer.get("digest", ""))
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise RagdTrainError(f"{manifest}: the model layer's digest {digest!r} is not sha256:<64 hex>")
    return layer


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def find_ollama_model(name: str, store: Path | None = None, *, verify: bool = True) -> OllamaModel | None:
    """The model ``name`` in Ollama's store; None when it has no manifest there. A manifest without
    a model layer, a missing blob, or a blob whose size or sha256 is not the manifest's, is a
    one-line error naming the file. Reads only."""
    if not looks_like_ollama_name(name):
        return None
    store = store or ollama_models_dir()
    manifest = manifest_path(name, store)
    if not manifest.is_file():
        return None
    layer = _model_layer(manifest)
    digest = layer["digest"]
    blob = store / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise RagdTrainError(f"{blob}: the model blob that {manifest} names is missing")
    size = blob.stat().st_size
    if isinstance(layer.get("size"), int) and layer["size"] != size:
        raise RagdTrainError(f"{blob}: {size} bytes, but {manifest} says {layer['size']}")
    if verify:
        actual = sha256_of(blob)
        if actual != digest.split(":", 1)[1]:
            raise RagdTrainError(f"{blob}: sha256 {actual} does not match its name (a damaged blob)")
    return OllamaModel(name=name, manifest=manifest, digest=digest, size=size, blob=blob)


def manifest_digest(name: str, store: Path | None = None) -> str:
    """The model layer's digest in the manifest of ``name`` ("" when the store has no such model or
    its manifest is unreadable): cheap, for the workflow to rerun training after an ``ollama pull``."""
    if not name or not looks_like_ollama_name(name):
        return ""
    manifest = manifest_path(name, store)
    if not manifest.is_file():
        return ""
    try:
        return str(_model_layer(manifest)["digest"])
    except RagdTrainError:
        return ""  # training reports it, naming the file


# GGUF links made in this process: link -> the model behind it (metadata of the weights used)
_LINKS: dict[Path, OllamaModel] = {}


def gguf_link(model: OllamaModel) -> Path:
    """A ``<digest>.gguf`` symlink to the blob in a temporary folder (removed at exit): transformers
    loads GGUF by a file name ending in ``.gguf``; nothing is copied and the store is not touched."""
    for link, known in _LINKS.items():
        if known == model and link.is_symlink():
            return link
    folder = Path(tempfile.mkdtemp(prefix="ragd-train-ollama-"))
    atexit.register(shutil.rmtree, folder, True)
    link = folder / f"{model.digest.replace(':', '-')}.gguf"
    link.symlink_to(model.blob.resolve())
    _LINKS[link] = model
    return link


def linked_model(weights: Path | str) -> OllamaModel | None:
    """The Ollama model behind a path that :func:`gguf_link` returned."""
    return _LINKS.get(Path(weights))
