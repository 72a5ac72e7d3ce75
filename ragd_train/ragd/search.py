"""ragd's hybrid search as the evaluation report uses it: BM25 and dense lists fused by rank.

``ragd search`` ranks by reciprocal rank fusion of its dense (Chroma) results and its SQLite FTS5
keyword results; :class:`HybridSearch` reproduces that over a snapshot's chunks, given the dense
rankings of the model under test, with ragd's own ``BM25Index`` and ``reciprocal_rank_fusion``
when ragd is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class HybridSearch:
    """ragd's hybrid search over the snapshot's chunks: its SQLite FTS5 ``BM25Index`` and its
    ``reciprocal_rank_fusion`` of the dense and keyword lists, each fetched to ``limit`` times
    ragd's ``rrf_fetch_multiplier``. Without ragd installed, the same fusion over ragd-train's
    own BM25 (``implementation`` says which ran)."""

    FETCH_MULTIPLIER = 3  # ragd 1.0.10 search_tuning.rrf_fetch_multiplier
    RRF_K = 60  # ragd 1.0.10 search.rrf_k

    def __init__(self, chunks: list[dict[str, Any]], workdir: Path) -> None:
        self.ids = [c["chunk_id"] for c in chunks]
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            import ragd
            from ragd.search.bm25 import BM25Index
            from ragd.search.hybrid import reciprocal_rank_fusion
        except ImportError:
            from ragd_train.bm25 import BM25

            self._ours = BM25([c["text"] for c in chunks])
            self._fuse = _rrf
            self.implementation = "ragd-train BM25 + reciprocal rank fusion (ragd is not installed)"
        else:
            self._ours = None
            self._index = BM25Index(workdir / "bm25.sqlite3")
            by_doc: dict[str, list[tuple[str, str]]] = {}
            for c in chunks:
                by_doc.setdefault(c["document_id"], []).append((c["chunk_id"], c["text"]))
            for doc, items in by_doc.items():
                self._index.add_chunks(doc, items)
            self._fuse = reciprocal_rank_fusion
            self.implementation = (
                f"ragd {getattr(ragd, '__version__', '?')} BM25Index + reciprocal_rank_fusion"
            )

    def keyword(self, queries: list[str], fetch: int) -> list[list[str]]:
        if self._ours is not None:
            scores = self._ours.scores(queries)
            out = []
            for row in scores:
                top = np.argsort(-row, kind="stable")[:fetch]
                out.append([self.ids[i] for i in top if row[i] > 0])
            return out
        return [[r.chunk_id for r in self._index.search(q, limit=fetch)] for q in queries]

    def rank(self, queries: list[str], dense: list[list[str]], limit: int) -> list[list[str]]:
        """The top ``limit`` chunk ids that ragd's hybrid search returns for each query."""
        fetch = limit * self.FETCH_MULTIPLIER
        keyword = self.keyword(queries, fetch)
        # ragd's FTS5 query ANDs every term: a question's words rarely all occur in one chunk
        self.keyword_share = sum(bool(k) for k in keyword) / max(1, len(keyword))
        fused = []
        for sem, kw in zip(dense, keyword, strict=True):
            lists = [[(c, 0.0) for c in ranking[:fetch]] for ranking in (sem, kw) if ranking]
            fused.append([c for c, _ in self._fuse(lists, k=self.RRF_K)[:limit]] if lists else [])
        return fused


def _rrf(rankings: list[list[tuple[str, float]]], k: int = 60) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, (item, _) in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
