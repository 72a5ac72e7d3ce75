"""Benchmark: the corpus-only teacher vs its parts on SciFact (NDCG@10, 300 test claims).

Side by side in one run: the base model (all-MiniLM-L6-v2), BM25 (``ragd_train.bm25``), their
reciprocal-rank fusion, and ``ragd_train.teacher.teacher_scores`` (z-score fusion) at several BM25
shares. The teacher labels the pairs that embedding training distils (``mining.teacher_pairs``), so
it must beat both parts by a clear margin for distillation to have anything to teach.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_teacher.py [--shares 0.1,0.2,0.3,0.5]

The base model's corpus embeddings come from (or go to) ``bench/out/cache``, the cache
bench_embeddings.py uses. Reads SciFact in place from ``../shared/data/scifact`` (CC BY-NC).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_embeddings as be  # noqa: E402


def ndcg10(scores: np.ndarray, doc_ids: np.ndarray, relevant: list[dict[str, int]]) -> float:
    from ragd_train.ir_metrics import ndcg_at_k

    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return float(ndcg_at_k([list(doc_ids[t]) for t in top], relevant, 10).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=be.DEFAULT_DATA)
    p.add_argument("--cache", type=Path, default=be.DEFAULT_OUT / "cache")
    p.add_argument("--shares", default="0.1,0.2,0.3,0.5")
    args = p.parse_args()

    from ragd_train.bm25 import BM25
    from ragd_train.mining import encode
    from ragd_train.models import resolve_model
    from ragd_train.teacher import teacher_scores

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_teacher_") as tmp:
        d = be.load_scifact(args.data, Path(tmp))
    test_ids = [q for q in d["qrels"]["test"] if q in d["queries"]]
    path = resolve_model(be.MODEL)
    base = be.load_model(path)
    corpus, _, cached = be.cached_encode(base, [path, be.ENCODE_BATCH], d["texts"], args.cache)
    queries = [d["queries"][q] for q in test_ids]
    dense = encode(base, queries, be.ENCODE_BATCH) @ corpus.T
    lexical = BM25(d["texts"]).scores(queries)
    relevant = [d["qrels"]["test"][q] for q in test_ids]
    ids = np.asarray(d["doc_ids"])

    def rrf(scores: np.ndarray) -> np.ndarray:
        ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)
        return 1.0 / (60 + ranks + 1)

    rows = [
        ("base (all-MiniLM-L6-v2)", ndcg10(dense, ids, relevant)),
        ("BM25", ndcg10(lexical, ids, relevant)),
    ]
    rows.append(("reciprocal-rank fusion", ndcg10(rrf(dense) + rrf(lexical), ids, relevant)))
    for share in (float(s) for s in args.shares.split(",")):
        rows.append(
            (f"teacher, BM25 share {share:g}", ndcg10(teacher_scores(dense, lexical, share), ids, relevant))
        )
    print(
        f"\nSciFact test, {len(test_ids)} claims, {len(ids)} docs (base corpus embeddings cached: {cached})"
    )
    print(f"{'retriever':32s} {'NDCG@10':>8s} {'vs base':>8s}")
    for name, value in rows:
        print(f"{name:32s} {value:8.4f} {value - rows[0][1]:+8.4f}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
