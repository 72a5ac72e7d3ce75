"""Sentence-transformers encoders: loaded offline, batched, normalised, cached on disk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("ragd_train")


def load_encoder(name: str) -> Any:
    """Load a sentence-transformers model from a name resolved offline."""
    from ragd_train.hub import resolve_model

    return open_sentence_transformer(resolve_model(name))


def open_sentence_transformer(path: str, device: str | None = None) -> Any:
    """A sentence-transformers model from a resolved path (never remote code): its files are
    checked first (``weights.check_model_dir``), and a model that still does not load is a
    one-line error naming it rather than a library traceback."""
    from sentence_transformers import SentenceTransformer

    from ragd_train.errors import RagdTrainError
    from ragd_train.weights import check_model_dir

    check_model_dir(path)
    try:
        return SentenceTransformer(path, device=device, trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise RagdTrainError(f"{path}: cannot load the model ({reason})") from None


class CachedEncoder:
    """Encode texts with a model loaded only when some text is not in the embedding cache yet.

    ``precision`` (``auto``, ``fp32``, ``bf16``; the ``encoding.precision`` setting) is resolved for
    the CPU here and is part of the cache key, so vectors of different precision never mix.
    """

    def __init__(
        self,
        name: str,
        cache_root: str | Path | None = None,
        batch_size: int = 64,
        precision: str = "auto",
    ) -> None:
        from ragd_train.cache import EmbeddingCache, model_fingerprint
        from ragd_train.hub import resolve_model
        from ragd_train.precision import resolve_precision

        self.name = name
        self.path = resolve_model(name)
        self.batch_size = batch_size
        self.precision = resolve_precision(precision, "cpu")
        self._model: Any = None
        settings = {"normalize": True} | ({"precision": self.precision} if self.precision != "fp32" else {})
        fingerprint = model_fingerprint(self.path, **settings)
        if cache_root is None:
            self.cache = None
        else:
            from ragd_train.runner import embedding_dimension

            dim = embedding_dimension(Path(self.path)) if Path(self.path).is_dir() else None
            self.cache = EmbeddingCache(cache_root, fingerprint, dim=dim)

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_encoder(self.path)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        def run(todo: list[str]) -> np.ndarray:
            return encode(self.model, todo, self.batch_size, precision=self.precision)

        return run(texts) if self.cache is None else self.cache.encode(texts, run)


def encode(
    model: Any, texts: list[str], batch_size: int = 64, progress: bool = False, precision: str = "fp32"
) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``; ``precision`` bf16 runs the model under
    bf16 autocast (the vectors are normalised in fp32)."""
    from ragd_train.precision import autocast

    if not texts:
        return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    with autocast(precision, model.device.type):
        emb = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=False,
            show_progress_bar=progress,
        )
    emb = emb.float()
    emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return np.asarray(emb.cpu().numpy(), dtype=np.float32)
