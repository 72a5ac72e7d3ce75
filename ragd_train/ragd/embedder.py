"""ragd's Embedder protocol, backed by a fine-tuned sentence-transformers model."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class FineTunedEmbedder:
    """What ragd 1.0.10's code calls on an embedder: ``embed``, ``embed_single``, ``dimension``,
    ``model_name`` (and ``is_loaded``, as ragd's ``SentenceTransformerEmbedder`` has)."""

    def __init__(self, path: str | Path, device: str | None = None, batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        self.path = Path(path).resolve()
        if not (self.path / "modules.json").exists():
            raise FileNotFoundError(f"{self.path} is not a sentence-transformers model directory")
        from ragd_train.hub import require_safetensors

        require_safetensors(self.path)
        self._model: Any = SentenceTransformer(str(self.path), device=device, trust_remote_code=False)
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors.astype(float).tolist()

    def embed_single(self, text: str) -> list[float]:
        """One text's vector (ragd's hybrid and semantic search call this for the query)."""
        vectors = self.embed([text])
        return vectors[0] if vectors else []

    def is_loaded(self) -> bool:
        return True

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    @property
    def model_name(self) -> str:
        return f"finetuned:{self.path}"
