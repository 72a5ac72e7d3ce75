"""Benchmark: the corpus-only teacher vs its parts on SciFact (NDCG@10, test and train claims).

Side by side in one run: the base model (all-MiniLM-L6-v2), BM25 (``ragd_train.bm25``), their
reciprocal-rank fusion, and ``ragd_train.generate.teacher.teacher_scores`` (z-score fusion) at several BM25
shares. The teacher labels the pairs that embedding training distils (``mining.teacher_pairs``), so
it must beat both parts by a clear margin for distillation to have anything to teach. The train
claims (``qrels/train.tsv``, never used by corpus-only training) are the dev split on which the
BM25 share should be chosen; the test claims are the benchmark's.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_teacher.py [--shares 0.1,0.2,0.3,0.5]

The base model's corpus embeddings come from (or go to) ``bench/out/cache``, the cache
bench_embeddings.py uses. Reads SciFact in place from ``../shared/data/scifact`` (CC BY-NC).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    ENCODE_BATCH,
    MODEL,
    cached_encode,
    load_model,
    load_scifact,
    offline,
)

offline()


def ndcg10(scores: np.ndarray, doc_ids: np.ndarray, relevant: list[dict[str, int]]) -> float:
    from ragd_train.evaluate.ir_metrics import ndcg_at_k

    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return float(ndcg_at_k([list(doc_ids[t]) for t in top], relevant, 10).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache", type=Path, default=DEFAULT_OUT / "cache")
    p.add_argument("--shares", default="0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--splits", default="test,train", help="qrels splits to score, one column each")
    args = p.parse_args()

    from ragd_train.bm25 import BM25
    from ragd_train.encoding import encode
    from ragd_train.generate.teacher import teacher_scores
    from ragd_train.hub import resolve_model

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_teacher_") as tmp:
        d = load_scifact(args.data, Path(tmp))
    splits = args.splits.split(",")
    path = resolve_model(MODEL)
    base = load_model(path)
    corpus, _, cached = cached_encode(base, [path, ENCODE_BATCH], d["texts"], args.cache)
    bm25 = BM25(d["texts"])
    ids = np.asarray(d["doc_ids"])

    def rrf(scores: np.ndarray) -> np.ndarray:
        ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
        return 1.0 / (60 + ranks + 1)

    shares = [float(s) for s in args.shares.split(",")]
    names = ["base (all-MiniLM-L6-v2)", "BM25", "reciprocal-rank fusion"]
    names += [f"teacher, BM25 share {share:g}" for share in shares]
    columns: list[list[float]] = []
    sizes = []
    for split in splits:
        query_ids = [q for q in d["qrels"][split] if q in d["queries"]]
        sizes.append(f"{len(query_ids)} {split}")
        queries = [d["queries"][q] for q in query_ids]
        dense = encode(base, queries, ENCODE_BATCH) @ corpus.T
        lexical = bm25.scores(queries)
        relevant = [d["qrels"][split][q] for q in query_ids]
        column = [ndcg10(dense, ids, relevant), ndcg10(lexical, ids, relevant)]
        column.append(ndcg10(rrf(dense) + rrf(lexical), ids, relevant))
        column += [ndcg10(teacher_scores(dense, lexical, share), ids, relevant) for share in shares]
        columns.append(column)
    print(f"\nSciFact, {' / '.join(sizes)} claims, {len(ids)} docs (base corpus embeddings cached: {cached})")
    print(f"{'retriever':32s}" + "".join(f" {split + ' NDCG@10':>15s} {'vs base':>8s}" for split in splits))
    for row, name in enumerate(names):
        cells = "".join(f" {col[row]:15.4f} {col[row] - col[0]:+8.4f}" for col in columns)
        print(f"{name:32s}{cells}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
