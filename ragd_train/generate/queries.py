"""Training-data generation: queries from a snapshot, then mining, filtering and the split."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ragd_train.cache import GenerationCache
from ragd_train.errors import InputError, RagdTrainError
from ragd_train.generate.snapshot import load_snapshot
from ragd_train.jsonl_io import read_jsonl, write_json, write_jsonl
from ragd_train.progress import track

log = logging.getLogger("ragd_train")
QUERY_FIELDS = ("query_id", "query", "chunk_id", "generator")


def make_generator(chunks: list[dict[str, Any]], config: dict[str, Any], cache_dir: str | Path) -> Any:
    """Pick the query generator the config asks for; ``auto`` falls back to no-LLM, saying so once."""
    from ragd_train.generate.llm import LLMQueryGenerator
    from ragd_train.generate.nollm import NoLLMGenerator

    training, seed = config["training"], config["seed"]
    choice = training["query_generator"]
    cache = GenerationCache(cache_dir, "generations")
    if choice in ("auto", "ollama"):
        from ragd_train.chat.connect import connect

        required_by = "training.query_generator" if choice == "ollama" else ""
        llm, problem = connect(config, required_by=required_by, instead="nollm")
        if llm is not None:
            return LLMQueryGenerator(llm, cache, temperature=config["ollama"]["temperature"], seed=seed)
        made = llm_made_chunks(chunks, cache)
        if made:
            raise RagdTrainError(
                f"{problem}, and {made} of the corpus's {len(chunks)} chunks have LLM-written queries "
                "in the cache: falling back would retrain on no-LLM queries instead. Start Ollama, or "
                "set training.query_generator: nollm to replace them"
            )
        message = f"{problem}: falling back to the no-LLM query generator"
        log.warning("%s", message)
        print(f"ragd-train: {message}", flush=True)  # the console, not only the rule's log
    elif choice == "local":
        from ragd_train.chat.local import LocalChatLLM

        llm = LocalChatLLM(training["local_model"], seed=seed, threads=1)  # more threads oversubscribe
        return LLMQueryGenerator(llm, cache, temperature=config["ollama"]["temperature"], seed=seed)
    return NoLLMGenerator(chunks, training["nollm_strategies"], seed=seed)


def llm_made_chunks(chunks: list[dict[str, Any]], cache: GenerationCache) -> int:
    """How many of ``chunks`` have LLM-written queries or verdicts in the generation cache (only an
    LLM writes entries there; each names the chunk's content hash)."""
    return len({c["content_hash"] for c in chunks} & cache.refs())


def query_id(chunk: dict[str, Any], query: str) -> str:
    """A stable id from the chunk content and the query text."""
    return "q_" + hashlib.sha256(f"{chunk['content_hash']}\n{query}".encode()).hexdigest()[:16]


def generate_queries(
    snapshot_path: str | Path, out_path: str | Path, config: dict[str, Any], cache_dir: str | Path = "cache"
) -> dict[str, Any]:
    """Write ``queries_per_chunk`` synthetic queries per snapshot chunk to ``out_path``."""
    start = time.monotonic()
    chunks = load_snapshot(snapshot_path)
    generator = make_generator(chunks, config, cache_dir)
    n = config["training"]["queries_per_chunk"]
    records: list[dict[str, Any]] = []
    empty = 0
    for chunk in track(chunks, f"generating queries ({generator.name})"):
        queries = generator.generate(chunk, n)
        empty += not queries
        for q in queries:
            record = {
                "query_id": query_id(chunk, q["query"]),
                "query": q["query"],
                "chunk_id": chunk["chunk_id"],
                "generator": f"{generator.name}/{q['strategy']}"
                if generator.name == "nollm"
                else generator.name,
            }
            if "positive" in q:
                record["positive"] = q["positive"]
            records.append(record)
    if not records:
        raise RagdTrainError(f"{snapshot_path}: no query could be generated from {len(chunks)} chunks")
    write_jsonl(out_path, records)
    cache = getattr(generator, "cache", None)
    stats = {
        "generator": generator.name,
        "chunks": len(chunks),
        "queries": len(records),
        "chunks_without_query": empty,
        "from_cache": cache.hits if cache else 0,
        "generated": (cache.misses if cache else len(chunks)) - getattr(generator, "failures", 0),
        "failed": getattr(generator, "failures", 0),
        "wall_time_s": round(time.monotonic() - start, 3),
    }
    log.info("generated %d queries for %d chunks with %s", len(records), len(chunks), generator.name)
    return stats


def split_by_document(
    records: list[dict[str, Any]], test_ratio: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split so that no test positive shares a document with a training record.

    A document goes to test when the hash of (seed, document id) falls below ``test_ratio``, so
    adding or deleting documents never moves the others between train and test.
    """

    def draw(doc: str) -> float:
        return int(hashlib.sha256(f"{seed}:{doc}".encode()).hexdigest()[:12], 16) / 16**12

    docs = sorted({r["source_document"] for r in records}, key=draw)
    test_docs = {d for d in docs if draw(d) < test_ratio} if len(docs) >= 2 else set()
    if len(docs) >= 2 and not test_docs:
        test_docs = {docs[0]}
    if len(docs) >= 2 and len(test_docs) == len(docs):
        test_docs.discard(docs[-1])
    train = [r for r in records if r["source_document"] not in test_docs]
    test = [r for r in records if r["source_document"] in test_docs]
    return train, test


def build_training_data(
    snapshot_path: str | Path,
    queries_path: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    config: dict[str, Any],
    *,
    stats_path: str | Path | None = None,
    cache_dir: str | Path = "cache",
    generation_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Mine hard negatives, apply the quality filter, split by document and write train/test."""
    from ragd_train.encoding import CachedEncoder
    from ragd_train.generate.bm25 import BM25
    from ragd_train.generate.mining import mine

    mining, training, seed = config["mining"], config["training"], config["seed"]
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    chunks = load_snapshot(snapshot_path)
    queries = read_jsonl(queries_path, QUERY_FIELDS)
    index = {c["chunk_id"]: i for i, c in enumerate(chunks)}
    lines = [n for n, raw in enumerate(Path(queries_path).read_bytes().split(b"\n"), 1) if raw.strip()]
    for lineno, q in zip(lines, queries, strict=True):
        if q["chunk_id"] not in index:
            raise InputError(
                f"'{q['chunk_id']}' is not in {snapshot_path}",
                path=queries_path,
                line=lineno,
                field="chunk_id",
            )
    texts = [c["text"] for c in chunks]
    documents = [c["document_id"] for c in chunks]
    positives = [index[q["chunk_id"]] for q in queries]

    encoder = CachedEncoder(mining["model"], cache_dir, mining["batch_size"])
    t = time.monotonic()
    corpus_emb = encoder.encode(texts)
    query_emb = encoder.encode([q["query"] for q in queries])
    timings["encode_s"] = time.monotonic() - t
    t = time.monotonic()
    bm25 = BM25(texts) if mining["bm25_weight"] > 0 else None
    mined = mine(
        query_emb,
        corpus_emb,
        [q["query"] for q in queries],
        bm25,
        positives,
        documents,
        num_negatives=training["hard_negatives_per_query"],
        candidates=mining["candidates"],
        bm25_weight=mining["bm25_weight"],
        relative_margin=mining["relative_margin"],
        exclude_same_document=mining["exclude_same_document"],
    )
    pairs: list[Any] = [None] * len(queries)
    if mining["teacher_pairs"]:
        from ragd_train.generate.teacher import teacher_pairs

        pairs = teacher_pairs(
            query_emb,
            corpus_emb,
            [q["query"] for q in queries],
            bm25 if bm25 is not None else BM25(texts),
            positives,
            documents,
            candidates=mining["candidates"],
            bm25_share=mining["teacher_bm25_share"],
            seed=seed,
        )
    timings["mine_s"] = time.monotonic() - t

    t = time.monotonic()
    judge = _make_judge(config, cache_dir) if training["quality_filter"] else None
    records: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for q, result, pair in track(list(zip(queries, mined, pairs, strict=True)), "filtering"):
        chunk = chunks[index[q["chunk_id"]]]
        verdict = (
            _verdict(judge, q, chunk, result, mining["roundtrip_top_k"])
            if training["quality_filter"]
            else {"method": "none", "kept": True}
        )
        if not verdict["kept"]:
            dropped[verdict["method"]] += 1
            continue
        records.append(
            {
                "query": q["query"],
                "query_id": q["query_id"],
                "positive": q.get("positive", chunk["text"]),
                "positive_id": chunk["chunk_id"],
                "negatives": [
                    {"id": chunks[i]["chunk_id"], "text": chunks[i]["text"], "score": s}
                    for i, s in zip(result.negatives, result.negative_scores, strict=True)
                ],
                "source_document": chunk["document_id"],
                "generator": q["generator"],
                "filter": verdict,
            }
        )
        if pair is not None:
            records[-1]["teacher_pair"] = {
                "first": {"id": chunks[pair.first]["chunk_id"], "text": chunks[pair.first]["text"]},
                "second": {"id": chunks[pair.second]["chunk_id"], "text": chunks[pair.second]["text"]},
                "margin": pair.margin,
            }
    timings["filter_s"] = time.monotonic() - t
    if not records:
        raise RagdTrainError(f"the quality filter dropped all {len(queries)} queries ({dict(dropped)})")
    train, test = split_by_document(records, training["test_ratio"], seed)
    write_jsonl(train_path, train)
    write_jsonl(test_path, test)
    timings["total_s"] = time.monotonic() - t0
    short = Counter(len(r["negatives"]) < training["hard_negatives_per_query"] for r in records)[True]
    log.info(
        "kept %d of %d queries (dropped %s); train %d, test %d; %d records have fewer than %d negatives",
        len(records),
        len(queries),
        dict(dropped) or "none",
        len(train),
        len(test),
        short,
        training["hard_negatives_per_query"],
    )
    stats = {
        "generation": generation_stats or {},
        "filtering": {
            "queries": len(queries),
            "kept": len(records),
            "dropped": dict(dropped),
            "method": judge_method(judge, training),
        },
        "split": {
            "train": len(train),
            "test": len(test),
            "train_documents": len({r["source_document"] for r in train}),
            "test_documents": len({r["source_document"] for r in test}),
        },
        "mining": {
            "records_with_fewer_negatives": short,
            "model": mining["model"],
            "embeddings_from_cache": encoder.cache.hits if encoder.cache else 0,
            "embeddings_computed": encoder.cache.misses if encoder.cache else len(texts) + len(queries),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    if stats_path is not None:
        write_json(stats_path, stats)
    return stats


def judge_method(judge: Any, training: dict[str, Any]) -> str:
    if not training["quality_filter"]:
        return "none"
    return "llm_judge" if judge is not None else "roundtrip"


def _make_judge(config: dict[str, Any], cache_dir: str | Path) -> Any | None:
    """An LLM judge when Ollama answers (or a local model was asked for), else None (round-trip)."""
    from ragd_train.generate.llm import LLMJudge

    if config["training"]["query_generator"] == "nollm":
        return None
    from ragd_train.chat.connect import connect

    llm, _ = connect(config)
    if llm is None:
        log.info("quality filter: no LLM reachable, using the round-trip consistency filter")
        return None
    return LLMJudge(
        llm,
        GenerationCache(cache_dir, "generations"),
        min_score=config["mining"]["judge_min_score"],
        seed=config["seed"],
    )


def _verdict(
    judge: Any, query: dict[str, Any], chunk: dict[str, Any], result: Any, top_k: int
) -> dict[str, Any]:
    roundtrip = {"rank": result.positive_rank + 1, "score": round(result.positive_score, 4)}
    if judge is not None:
        try:
            return {**judge.judge(query["query"], chunk["text"]), "retriever": roundtrip}
        except RagdTrainError as exc:
            log.warning("judge failed for %s: %s", query["query_id"], exc)
            return {"method": "judge_failed", "kept": False}
    return {"method": "roundtrip", **roundtrip, "top_k": top_k, "kept": result.positive_rank < top_k}
