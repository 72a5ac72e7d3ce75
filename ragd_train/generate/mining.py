"""Hard-negative mining: dense retrieval fused with BM25, guarded against false negatives.

The corpus is encoded once, in batches; queries are scored in blocks, so memory stays
at one (block x corpus) score matrix whatever the corpus size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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


def _top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` highest scores, best first; equal scores by lower index."""
    import torch  # torch.topk beats np.argpartition here; torch is loaded for encoding anyway

    top = torch.topk(torch.from_numpy(np.ascontiguousarray(scores)), k, dim=1, sorted=False).indices.numpy()
    order = np.lexsort((top, -np.take_along_axis(scores, top, axis=1)), axis=1)
    return np.take_along_axis(top, order, axis=1)


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
    k = min(candidates, corpus_emb.shape[0])
    dense_rrf = 1.0 / (RRF_K + np.arange(k))  # float64: the same numbers as 1.0 / (RRF_K + rank)
    lex_rrf = bm25_weight / (RRF_K + np.arange(k))
    use_lexical = bm25 is not None and bm25_weight > 0
    codes = None
    if exclude_same_document:
        ids: dict[str, int] = {}
        codes = np.fromiter((ids.setdefault(d, len(ids)) for d in documents), np.int64, len(documents))
    all_positives = np.asarray(positives, dtype=np.int64)
    results: list[MiningResult] = []
    block = QUERY_BLOCK
    for start in range(0, len(queries), block):
        stop = min(start + block, len(queries))
        rows = np.arange(stop - start)
        dense = query_emb[start:stop] @ corpus_emb.T
        pos = all_positives[start:stop]
        pos_score = dense[rows, pos]
        pos_rank = (dense > pos_score[:, None]).sum(axis=1).tolist()
        pos64 = pos_score.astype(np.float64)
        if num_negatives <= 0:
            results.extend(
                MiningResult(positive_score=s, positive_rank=r)
                for s, r in zip(pos64.tolist(), pos_rank, strict=True)
            )
            continue
        cand = _top_rows(dense, k)
        valid = np.ones(cand.shape, dtype=bool)
        if use_lexical:
            lexical = bm25.scores(queries[start:stop])
            ltop = _top_rows(lexical, k)
            lvalid = np.take_along_axis(lexical, ltop, axis=1) > 0  # BM25 scores are >= 0
            match = (ltop[:, :, None] == cand[:, None, :]) & lvalid[:, :, None]  # (row, lex rank, dense rank)
            r_i, l_i, d_i = np.nonzero(match)
            fused = np.tile(dense_rrf, (len(rows), 1))
            fused[r_i, d_i] += lex_rrf[l_i]  # in both lists: 1/(K + dense rank) + w/(K + lex rank)
            lex_only = lvalid & ~match.any(axis=2)
            cand = np.concatenate([cand, ltop], axis=1)
            fused = np.concatenate([fused, np.where(lex_only, lex_rrf, -np.inf)], axis=1)
            valid = np.concatenate([valid, lex_only], axis=1)
            order = np.lexsort((cand, -fused), axis=1)  # fused score down, then lower index
            cand = np.take_along_axis(cand, order, axis=1)
            valid = np.take_along_axis(valid, order, axis=1)
        scores = np.take_along_axis(dense, cand, axis=1)
        # Compared in the scores' dtype, as the scalar comparison did.
        ceiling = (pos64 - relative_margin * np.abs(pos64)).astype(dense.dtype)
        keep = valid & (cand != pos[:, None]) & ~(scores > ceiling[:, None])
        if codes is not None:
            keep &= codes[cand] != codes[pos][:, None]
        keep &= np.cumsum(keep, axis=1) <= num_negatives
        counts = keep.sum(axis=1).tolist()
        negatives = cand[keep].tolist()
        negative_scores = [round(s, 4) for s in scores[keep].astype(np.float64).tolist()]
        at = 0
        for score, rank, count in zip(pos64.tolist(), pos_rank, counts, strict=True):
            results.append(
                MiningResult(
                    negatives=negatives[at : at + count],
                    negative_scores=negative_scores[at : at + count],
                    positive_rank=rank,
                    positive_score=score,
                )
            )
            at += count
    return results
