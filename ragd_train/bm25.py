"""Okapi BM25 over a sparse term matrix: scores a block of queries against the corpus at once."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ragd_train.text import content_terms


class BM25:
    """BM25 (k1, b) with scores computed as one sparse matrix product per query block."""

    def __init__(self, corpus: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        lengths = np.zeros(len(corpus), dtype=np.float32)
        for i, text in enumerate(corpus):
            counts: dict[int, int] = {}
            terms = content_terms(text)
            lengths[i] = len(terms)
            for term in terms:
                j = self.vocab.setdefault(term, len(self.vocab))
                counts[j] = counts.get(j, 0) + 1
            rows.extend([i] * len(counts))
            cols.extend(counts.keys())
            vals.extend(counts.values())
        tf = sparse.csr_matrix(
            (np.asarray(vals, dtype=np.float32), (rows, cols)), shape=(len(corpus), max(len(self.vocab), 1))
        )
        df = np.bincount(tf.indices, minlength=tf.shape[1]).astype(np.float32)
        n = len(corpus)
        idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        avgdl = float(lengths.mean()) if n else 0.0
        norm = k1 * (1 - b + b * lengths / max(avgdl, 1e-9))
        tf = tf.tocoo()
        weights = tf.data * (k1 + 1) / (tf.data + norm[tf.row]) * idf[tf.col]
        self.weights = sparse.csr_matrix(
            (weights, (tf.row, tf.col)), shape=tf.shape
        ).T.tocsr()  # terms x docs

    def query_matrix(self, queries: list[str]) -> sparse.csr_matrix:
        rows, cols = [], []
        for i, query in enumerate(queries):
            ids = {self.vocab[t] for t in content_terms(query) if t in self.vocab}
            rows.extend([i] * len(ids))
            cols.extend(ids)
        data = np.ones(len(rows), dtype=np.float32)
        return sparse.csr_matrix((data, (rows, cols)), shape=(len(queries), self.weights.shape[0]))

    def scores(self, queries: list[str]) -> np.ndarray:
        """Dense (n_queries x n_docs) float32 score matrix."""
        return np.asarray((self.query_matrix(queries) @ self.weights).todense(), dtype=np.float32)
