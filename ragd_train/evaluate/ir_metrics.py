"""Information-retrieval metrics in numpy: exact cosine top-k, NDCG/MRR/Recall@k per query.

Conventions follow trec_eval/pytrec_eval (what BEIR and MTEB report) and sentence-transformers'
``InformationRetrievalEvaluator``:

* ``qrels`` map ``query_id -> {doc_id: grade}``; a grade <= 0 is not relevant. Queries without a
  relevant document are skipped (as BEIR/MTEB do).
* NDCG uses linear gain (``grade / log2(rank + 1)``), the ideal ranking from the sorted grades.
* Recall@k = relevant documents in the top k / all relevant documents of the query.
* MRR@k = 1 / rank of the first relevant document within the top k, else 0.
* Ranking ties are broken by corpus position (the earlier document first).

Every metric is returned per query, so callers can average, compare or bootstrap them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Qrels = Mapping[str, Mapping[str, int | float]]
BLOCK = 256


def normalize(emb: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Rows of ``emb`` (truncated to the first ``dim`` columns, Matryoshka-style) with unit norm."""
    emb = np.asarray(emb, dtype=np.float32)
    if dim is not None:
        if dim > emb.shape[1]:
            raise ValueError(f"dim {dim} exceeds the embedding dimension {emb.shape[1]}")
        emb = emb[:, :dim]
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def retrieve(
    query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, *, block: int = BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-``k``: (indices, scores), each ``(n_queries, k)``, best first.

    Queries are scored in blocks, so memory stays at one (block x corpus) score matrix.
    Ties are broken by the lower corpus index.
    """
    q = normalize(query_emb)
    c = normalize(corpus_emb)
    k = min(k, c.shape[0])
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    scores = np.empty((q.shape[0], k), dtype=np.float32)
    for start in range(0, q.shape[0], block):
        sims = q[start : start + block] @ c.T
        if k < sims.shape[1]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            # Take every document tied with the k-th score, so the tie-break below is exact.
            kth = np.take_along_axis(sims, part, axis=1).min(axis=1, keepdims=True)
        for row in range(sims.shape[0]):
            s = sims[row]
            cand = np.flatnonzero(s >= kth[row]) if k < sims.shape[1] else np.arange(s.shape[0])
            order = np.lexsort((cand, -s[cand]))[:k]
            indices[start + row] = cand[order]
            scores[start + row] = s[cand[order]]
    return indices, scores


def _relevant(qrels_q: Mapping[str, int | float]) -> dict[str, float]:
    return {doc: float(g) for doc, g in qrels_q.items() if g > 0}


def ndcg_at_k(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Mapping[str, int | float]], k: int
) -> np.ndarray:
    """NDCG@k per query (linear gain) for ranked doc-id lists and their graded judgements."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros(len(ranked))
    for i, (docs, qrels_q) in enumerate(zip(ranked, relevant, strict=True)):
        rel = _relevant(qrels_q)
        if not rel:
            continue
        gains = np.array([rel.get(d, 0.0) for d in list(docs)[:k]])
        dcg = float(gains @ discounts[: len(gains)])
        ideal = np.sort(np.fromiter(rel.values(), dtype=float))[::-1][:k]
        out[i] = dcg / float(ideal @ discounts[: len(ideal)])
    return out


def recall_at_k(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Mapping[str, int | float]], k: int
) -> np.ndarray:
    """Recall@k per query: relevant documents retrieved in the top k / all relevant documents."""
    out = np.zeros(len(ranked))
    for i, (docs, qrels_q) in enumerate(zip(ranked, relevant, strict=True)):
        rel = _relevant(qrels_q)
        if rel:
            out[i] = sum(d in rel for d in list(docs)[:k]) / len(rel)
    return out


def mrr_at_k(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Mapping[str, int | float]], k: int
) -> np.ndarray:
    """Reciprocal rank of the first relevant document within the top k (0 when none is)."""
    out = np.zeros(len(ranked))
    for i, (docs, qrels_q) in enumerate(zip(ranked, relevant, strict=True)):
        rel = _relevant(qrels_q)
        for rank, d in enumerate(list(docs)[:k], start=1):
            if d in rel:
                out[i] = 1.0 / rank
                break
    return out


METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


@dataclass
class EvalResult:
    """Per-query metric arrays, keyed ``{dim: {"ndcg@10": array, ...}}``, aligned with ``query_ids``."""

    query_ids: list[str]
    per_query: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def mean(self) -> dict[int, dict[str, float]]:
        return {d: {m: float(v.mean()) for m, v in ms.items()} for d, ms in self.per_query.items()}


def evaluate(
    model: Any | None,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    qrels: Qrels,
    *,
    ks: Mapping[str, Sequence[int]] | None = None,
    dims: Sequence[int] | None = None,
    query_emb: np.ndarray | None = None,
    corpus_emb: np.ndarray | None = None,
    batch_size: int = 64,
) -> EvalResult:
    """Evaluate a bi-encoder (or precomputed embeddings) on ``qrels``.

    ``queries``/``corpus`` map ids to texts (in the order the embeddings follow, when given);
    only queries with a relevant document in ``qrels`` are scored. ``ks`` maps metric names
    (``ndcg``, ``recall``, ``mrr``) to cut-offs; default NDCG@10, Recall@10/100, MRR@10.
    ``dims`` truncates both sides to each Matryoshka dim and re-normalises (default: the full dim).
    """
    ks = ks or {"ndcg": [10], "recall": [10, 100], "mrr": [10]}
    qids = [q for q in queries if _relevant(qrels.get(q, {}))]
    doc_ids = list(corpus)
    if query_emb is None or corpus_emb is None:
        if model is None:
            raise ValueError("pass a model or both query_emb and corpus_emb")
        from ragd_train.encoding import encode

        if corpus_emb is None:
            corpus_emb = encode(model, [corpus[d] for d in doc_ids], batch_size)
        if query_emb is None:
            query_emb = encode(model, [queries[q] for q in qids], batch_size)
            all_qids = qids
        else:
            all_qids = list(queries)
    else:
        all_qids = list(queries)
    if len(all_qids) != len(query_emb) or len(doc_ids) != len(corpus_emb):
        raise ValueError("embeddings do not match the queries/corpus given")
    position = {q: i for i, q in enumerate(all_qids)}
    rows = [position[q] for q in qids]
    qe = np.asarray(query_emb)[rows]
    full = int(np.asarray(corpus_emb).shape[1])
    max_k = max(k for cut in ks.values() for k in cut)
    relevant = [qrels[q] for q in qids]
    result = EvalResult(query_ids=qids)
    for dim in dims or [full]:
        idx, _ = retrieve(normalize(qe, dim), normalize(corpus_emb, dim), max_k)
        ranked = [[doc_ids[i] for i in row] for row in idx]
        result.per_query[dim] = {
            f"{name}@{k}": METRICS[name](ranked, relevant, k) for name, cut in ks.items() for k in cut
        }
    return result
