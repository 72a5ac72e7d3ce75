"""Hard-negative mining: dense retrieval fused with BM25, guarded against false negatives.

The corpus is encoded once, in batches; queries are scored in blocks, so memory stays
at one (block x corpus) score matrix whatever the corpus size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.bm25 import BM25

log = logging.getLogger("ragd_train")
RRF_K = 60
QUERY_BLOCK = 512


@dataclass
class MiningResult:
    """Per query: negatives (corpus indices, best first), the positive's dense rank and score."""

    negatives: list[int] = field(default_factory=list)
    negative_scores: list[float] = field(default_factory=list)
    positive_rank: int = 0
    positive_score: float = 0.0


def load_encoder(name: str) -> Any:
    """Load a sentence-transformers model from a name resolved offline."""
    from sentence_transformers import SentenceTransformer

    from ragd_train.models import resolve_model

    return SentenceTransformer(resolve_model(name), trust_remote_code=False)


class CachedEncoder:
    """Encode texts with a model loaded only when some text is not in the embedding cache yet."""

    def __init__(self, name: str, cache_root: str | Path | None = None, batch_size: int = 64) -> None:
        from ragd_train.cache import EmbeddingCache, model_fingerprint
        from ragd_train.models import resolve_model

        self.name = name
        self.path = resolve_model(name)
        self.batch_size = batch_size
        self._model: Any = None
        fingerprint = model_fingerprint(self.path, normalize=True)
        self.cache = EmbeddingCache(cache_root, fingerprint) if cache_root is not None else None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_encoder(self.path)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.cache is None:
            return encode(self.model, texts, self.batch_size)
        return self.cache.encode(texts, lambda todo: encode(self.model, todo, self.batch_size))


def encode(model: Any, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``."""
    emb = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=progress,
    )
    return np.asarray(emb, dtype=np.float32)


def _ranks_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first."""
    k = min(k, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def mine(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    queries: list[str],
    bm25: BM25 | None,
    positives: list[int],
    documents: list[str],
    *,
    num_negatives: int,
    candidates: int = 50,
    bm25_weight: float = 1.0,
    relative_margin: float = 0.05,
    exclude_same_document: bool = True,
) -> list[MiningResult]:
    """Mine ``num_negatives`` hard negatives per query by reciprocal-rank fusion of dense and BM25.

    A candidate is skipped when it is the positive, shares the positive's document (if
    ``exclude_same_document``), or its dense score exceeds ``(1 - relative_margin)`` times
    the positive's (likely a false negative).
    """
    results: list[MiningResult] = []
    for start in range(0, len(queries), QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, len(queries))
        dense = query_emb[start:stop] @ corpus_emb.T
        lexical = bm25.scores(queries[start:stop]) if bm25 is not None and bm25_weight > 0 else None
        for row in range(stop - start):
            qi = start + row
            pos = positives[qi]
            scores = dense[row]
            pos_score = float(scores[pos])
            result = MiningResult(positive_score=pos_score, positive_rank=int((scores > pos_score).sum()))
            if num_negatives > 0:
                fused: dict[int, float] = {}
                for rank, idx in enumerate(_ranks_desc(scores, candidates)):
                    fused[int(idx)] = 1.0 / (RRF_K + rank)
                if lexical is not None:
                    lex = lexical[row]
                    for rank, idx in enumerate(_ranks_desc(lex, candidates)):
                        if lex[idx] <= 0:
                            break
                        fused[int(idx)] = fused.get(int(idx), 0.0) + bm25_weight / (RRF_K + rank)
                ceiling = pos_score - relative_margin * abs(pos_score)
                for idx in sorted(fused, key=lambda i: (-fused[i], i)):
                    if idx == pos or (exclude_same_document and documents[idx] == documents[pos]):
                        continue
                    if scores[idx] > ceiling:
                        continue
                    result.negatives.append(idx)
                    result.negative_scores.append(round(float(scores[idx]), 4))
                    if len(result.negatives) >= num_negatives:
                        break
            results.append(result)
    return results
