"""Benchmark: does reranking the embedding model's top 50 with our fine-tuned reranker raise SciFact NDCG@10?

One run, on BEIR SciFact (read in place from ``../shared/data/scifact``, CC BY-NC, never copied):

1. First stage: an embedding model retrieves the top ``--candidates`` (50) abstracts for each of
   the 300 human test claims. ``--embedding-model DIR`` names a fine-tuned SciFact model; without
   it (the default) the base ``sentence-transformers/all-MiniLM-L6-v2`` is the first stage, and the
   report says so. The base model's corpus embeddings are cached in ``bench/out/cache`` (the key
   scheme of bench_generation.py / bench_embeddings.py).
2. Training data: the human training claims (``qrels/train.tsv``), each (claim, relevant abstract)
   with ``--negatives`` hard negatives mined by ``ragd_train.generate.mining.mine`` (dense + BM25 fusion,
   relative-margin guard) against the base embeddings; the claim's other relevant abstracts are
   never negatives. Written as the workflow's train.jsonl records.
3. Training: ``ragd_train.reranker.train.train_reranker`` (the rule's code). ``--kind colbert`` (the
   default here) trains sentence-transformers' native late-interaction ``MultiVectorEncoder`` from the
   offline all-MiniLM-L6-v2 weights with MultipleNegativesRankingLoss; ``--kind cross-encoder``
   trains a ``CrossEncoder`` from the same weights with a fresh scoring head, since
   ``cross-encoder/ms-marco-MiniLM-L-6-v2`` is not available offline (BCE by default).
4. Evaluation: ``ragd_train.evaluate.reranker.evaluate_rerankers`` (the report rule's code): NDCG@10 and
   MRR@10 of the embeddings alone and reranked, measured in this run on the same candidates, with
   95% paired-bootstrap CIs and a sign-flip p-value. ``--with-base-reranker`` also scores the
   untrained base (noise; costs another full scoring pass).

Measured on the 2-core box (shared, load 3-7), first stage = base all-MiniLM-L6-v2, 300 test claims,
top 50 (recall@50 0.892):

    embeddings alone                                   NDCG@10 0.6451  MRR@10 0.6047
    + ColBERT reranker (defaults, 11 min in all)       NDCG@10 0.7002  MRR@10 0.6629
        delta +0.0551, 95% CI [+0.0279, +0.0837], p=0.0004
    + cross-encoder, fresh head (40 min in all)        NDCG@10 0.2638  MRR@10 0.2073
        --kind cross-encoder --max-length 128 --learning-rate 1e-4 --negatives 3
        (230 steps; the BCE loss never left the constant-prediction level of ~1.0)

    . .venv/bin/activate
    python bench/bench_reranker.py                      # the benchmark, ColBERT (~11 min on 2 cores)
    python bench/bench_reranker.py --kind cross-encoder --max-length 128 --learning-rate 1e-4 --negatives 3
    python bench/bench_reranker.py --quick              # smoke run: 150 train claims, 60 test claims
    python bench/bench_reranker.py --reranker bench/out/scifact-reranker   # evaluate a trained one
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    ENCODE_BATCH,
    cache_file,
    claim_ids,
    load_scifact,
    log,
    offline,
    plain_args,
    relevant_pairs,
    without_relevant,
    write_cache,
)
from common import MODEL as EMBEDDING

offline()


class CachedEmbedder:
    """``embed(model_name, texts)``: unit-normalised embeddings, large lists cached on disk."""

    def __init__(self, cache: Path | None) -> None:
        self.cache = cache
        self.models: dict[str, Any] = {}
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, texts: list[str]) -> np.ndarray:
        from sentence_transformers import SentenceTransformer

        from ragd_train.encoding import encode
        from ragd_train.hub import resolve_model

        path = resolve_model(name)
        npy = cache_file(self.cache, [path, ENCODE_BATCH], texts) if self.cache else None
        if npy is not None and npy.is_file():
            return np.load(npy)
        if path not in self.models:
            self.models[path] = SentenceTransformer(path, device="cpu", trust_remote_code=False)
        t = time.perf_counter()
        log(f"encoding {len(texts)} texts with {name}")
        emb = encode(self.models[path], texts, ENCODE_BATCH)
        seconds = time.perf_counter() - t
        self.timings[f"{Path(name).name}:{len(texts)}"] = round(seconds, 2)
        if npy is not None and len(texts) >= 1000:
            write_cache(npy, emb, seconds)
        return emb


def training_records(
    d: dict[str, Any], embed: CachedEmbedder, negatives: int, limit: int | None, seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(train claim, relevant abstract, mined hard negatives) as train.jsonl records."""
    from ragd_train.bm25 import BM25
    from ragd_train.generate.mining import mine

    qids = claim_ids(d, "train", limit, seed)
    pairs = relevant_pairs(d, "train", qids)
    t = time.perf_counter()
    corpus_emb = embed(EMBEDDING, d["texts"])
    q_texts = [d["queries"][q] for q, _ in pairs]
    q_emb = embed(EMBEDDING, q_texts)
    mined = mine(
        q_emb,
        corpus_emb,
        q_texts,
        BM25(d["texts"]),
        [i for _, i in pairs],
        d["doc_ids"],
        num_negatives=negatives + 3,  # room to drop the claim's other relevant abstracts
    )
    records = []
    for (q, i), negs in zip(pairs, without_relevant(d, "train", pairs, mined, negatives), strict=True):
        records.append(
            {
                "query": d["queries"][q],
                "query_id": q,
                "positive": d["texts"][i],
                "positive_id": d["chunk_ids"][i],
                "negatives": [{"id": d["chunk_ids"][j], "text": d["texts"][j]} for j in negs],
                "source_document": d["doc_ids"][i],
            }
        )
    return records, {"claims": len(qids), "pairs": len(records), "mine_s": round(time.perf_counter() - t, 2)}


def test_records(d: dict[str, Any], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """One record per (test claim, relevant abstract): the report's test.jsonl format."""
    return [
        {"query": d["queries"][q], "query_id": q, "positive_id": d["chunk_ids"][i]}
        for q, i in relevant_pairs(d, "test", claim_ids(d, "test", limit, seed))
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "bench_reranker.json")
    parser.add_argument("--cache", type=Path, default=DEFAULT_OUT / "cache")
    parser.add_argument("--embedding-model", default=None, help="A fine-tuned SciFact embedding model dir.")
    parser.add_argument("--reranker", type=Path, default=None, help="Evaluate this reranker; no training.")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_OUT / "scifact-reranker")
    parser.add_argument("--train-claims", type=int, default=0, help="Subsample the train claims (0 = all).")
    parser.add_argument("--test-claims", type=int, default=0, help="Subsample the test claims (0 = all).")
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--kind", choices=["cross-encoder", "colbert"], default="colbert")
    parser.add_argument("--loss", choices=["bce", "lambda"], default="bce")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--bootstrap-samples", type=int, default=10_000)
    parser.add_argument("--with-base-reranker", action="store_true")
    parser.add_argument("--quick", action="store_true", help="150 train claims, 60 test claims.")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.quick:
        args.train_claims, args.test_claims = args.train_claims or 150, args.test_claims or 60

    import torch

    from ragd_train.evaluate.reranker import evaluate_rerankers, markdown_reranker_report, reranker_message
    from ragd_train.jsonl_io import write_json, write_jsonl
    from ragd_train.progress import setup_logging
    from ragd_train.reranker.train import (
        DEFAULT_FALLBACK,
        DEFAULT_RERANKER,
        RerankerTrainingConfig,
        train_reranker,
    )

    setup_logging()
    start = time.perf_counter()
    embed = CachedEmbedder(args.cache)
    stages: dict[str, Any] = {}
    first_stage = args.embedding_model
    note = (
        f"first stage: the fine-tuned embedding model {first_stage}"
        if first_stage
        else f"first stage: the base {EMBEDDING} (no fine-tuned SciFact embedding model given)"
    )
    log(note)
    with tempfile.TemporaryDirectory(prefix="bench_reranker_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        d = load_scifact(args.data, work)
        stages["load_s"] = round(time.perf_counter() - t, 2)
        log(f"SciFact: {len(d['texts'])} abstracts")

        reranker_dir = args.reranker
        training: dict[str, Any] = {}
        if reranker_dir is None:
            t = time.perf_counter()
            records, info = training_records(d, embed, args.negatives, args.train_claims, args.seed)
            stages["training_data_s"] = round(time.perf_counter() - t, 2)
            train_path = work / "train.jsonl"
            write_jsonl(train_path, records)
            log(f"training data: {info['pairs']} (claim, abstract) pairs from {info['claims']} claims")
            cfg = RerankerTrainingConfig(
                kind=args.kind,
                base_model=DEFAULT_RERANKER,
                fallback_model=DEFAULT_FALLBACK,
                loss=args.loss,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                max_length=args.max_length,
                negatives_per_query=args.negatives,
                seed=args.seed,
            )
            shutil.rmtree(args.model_dir, ignore_errors=True)
            meta = train_reranker(train_path, args.model_dir, cfg, device="cpu")
            reranker_dir = args.model_dir
            stages["train_s"] = meta["wall_time_s"]
            training = {
                **info,
                "config": meta["config"],
                "base_model_path": meta["base_model_path"],
                "base_model_fallback": meta["base_model_fallback"],
                "steps": len(meta["loss_history"]),
                "first_loss": meta["loss_history"][0]["loss"],
                "last_loss": meta["loss_history"][-1]["loss"],
                "train_time_s": meta["train_time_s"],
                "peak_memory_mb": meta["peak_memory_mb"],
            }
        test_path = work / "test.jsonl"
        write_jsonl(test_path, test_records(d, args.test_claims, args.seed))
        t = time.perf_counter()
        report = evaluate_rerankers(
            reranker_dir,
            args.embedding_model,
            EMBEDDING,
            DEFAULT_RERANKER,
            test_path,
            d["snapshot"],
            reranker_fallback=DEFAULT_FALLBACK,
            candidates=args.candidates,
            max_length=args.max_length,
            bootstrap_samples=args.bootstrap_samples,
            seed=args.seed,
            include_base_reranker=args.with_base_reranker,
            embed=embed,
        )
        stages["evaluate_s"] = round(time.perf_counter() - t, 2)
    stages["encode_s"] = embed.timings
    stages["total_s"] = round(time.perf_counter() - start, 2)
    result = {
        "benchmark": "reranker on SciFact",
        "first_stage_note": note,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "load_average_end": list(os.getloadavg()),
        },
        "args": plain_args(args),
        "training": training,
        "report": report,
        "stages_s": stages,
    }
    write_json(args.out, result)
    args.out.with_suffix(".md").write_text(markdown_reranker_report(report))
    h = report["headline"]
    log(note)
    print()
    print(f"{'':34s} {'NDCG@10':>8s} {'MRR@10':>8s}")
    for c in report["combinations"]:
        label = f"{c['retriever']} embeddings + {c['reranker']} reranker"
        print(f"{label:34s} {c['metrics']['ndcg@10']['mean']:8.4f} {c['metrics']['mrr@10']['mean']:8.4f}")
    k = report["candidates"]
    print(f"recall@{k} of the candidates: {report[f'recall@{k}']}")
    print(reranker_message(report))
    print(f"delta NDCG@10 {h['delta']:+.4f} [{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], p={h['p_value']:.3g}")
    print(f"stages (s): {json.dumps(stages)}")
    print(f"written: {args.out}")
    return 0 if report["verdict"] == "improves" else 1


if __name__ == "__main__":
    sys.exit(main())
