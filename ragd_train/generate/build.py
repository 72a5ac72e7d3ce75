"""Training records from the queries: hard negatives mined from the index, the quality filter, the
split by document (the ``build_training_data`` rule)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ragd_train.cache import GenerationCache
from ragd_train.errors import InputError, RagdTrainError
from ragd_train.generate.queries import QUERY_FIELDS
from ragd_train.jsonl_io import read_jsonl, record_lines, write_json, write_jsonl
from ragd_train.progress import track
from ragd_train.snapshot import load_snapshot

log = logging.getLogger("ragd_train")


def build_training_data(
    snapshot_path: str | Path,
    queries_path: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    config: dict[str, Any],
    *,
    dev_path: str | Path | None = None,
    chat_history: str | Path | None = None,
    chat_questions_path: str | Path | None = None,
    stats_path: str | Path | None = None,
    cache_dir: str | Path = "cache",
    generation_stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Split by document, mine hard negatives, filter the training side and write train/dev/test.

    The side of each document is decided first (``assign_documents``); the quality filter (the
    LLM judge or the base retriever's round trip) only ever drops training queries, so the dev and
    test sets are never chosen by a model they judge.
    """
    from ragd_train.generate.split import assign_documents, duplicate_documents

    generate, seed = config["generate"], config["seed"]
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    chunks = load_snapshot(snapshot_path)
    queries = read_jsonl(queries_path, QUERY_FIELDS)
    index = _chunk_index(chunks, queries, snapshot_path, queries_path)
    sides = assign_documents(chunks, seed, generate["test_ratio"], generate["dev_ratio"])
    mined, pairs, encoder = _mine(chunks, queries, index, config, cache_dir, timings)
    chat_train, chat_eval, chat_stats = (
        chat_records(chat_history, chunks, sides, encoder, config)
        if chat_history is not None
        else ([], [], {"source": None})
    )

    t = time.monotonic()
    judge = _make_judge(config, cache_dir) if generate["quality_filter"] else None
    split: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    dropped: Counter[str] = Counter()
    for q, result, pair in track(list(zip(queries, mined, pairs, strict=True)), "filtering"):
        chunk = chunks[index[q["chunk_id"]]]
        side = sides[chunk["document_id"]]
        if side != "train":  # held out: never filtered, least of all by the base retriever
            verdict = {"method": "none (held out)", "kept": True}
        elif generate["quality_filter"]:
            verdict = _verdict(judge, q, chunk, result, config["mining"]["roundtrip_top_k"])
        else:
            verdict = {"method": "none", "kept": True}
        if verdict["kept"]:
            record = _record(q, chunk, result, pair if side == "train" else None, verdict, chunks)
            split[side].append(record | {"split": side})
        else:
            dropped[verdict["method"]] += 1
    timings["filter_s"] = time.monotonic() - t
    train, dev, test = split["train"] + chat_train, split["dev"], split["test"]
    if not train:
        raise RagdTrainError(
            f"no training query left: the quality filter dropped all {len(queries)} ({dict(dropped)})"
        )
    write_jsonl(train_path, train)
    write_jsonl(test_path, test)
    if dev_path is not None:
        write_jsonl(dev_path, dev)
    if chat_questions_path is not None:
        write_jsonl(chat_questions_path, chat_eval)
    timings["total_s"] = time.monotonic() - t0
    records = train + dev + test
    short = Counter(len(r["negatives"]) < generate["hard_negatives_per_query"] for r in records)[True]
    log.info(
        "kept %d of %d queries (dropped %s); train %d, dev %d, test %d; %d records have fewer than %d "
        "negatives",
        len(records),
        len(queries),
        dict(dropped) or "none",
        len(train),
        len(dev),
        len(test),
        short,
        generate["hard_negatives_per_query"],
    )
    stats = {
        "generation": generation_stats or {},
        "chat_history": chat_stats,
        "filtering": {
            "queries": len(queries),
            "kept": len(records),
            "dropped": dict(dropped),
            "method": judge_method(judge, generate),
            "applies_to": "training queries only (dev and test are never filtered)",
        },
        "split": {
            "by": "document, decided before generation and filtering",
            "train": len(train),
            "dev": len(dev),
            "test": len(test),
            "train_documents": len({r["source_document"] for r in train}),
            "dev_documents": len({r["source_document"] for r in dev}),
            "test_documents": len({r["source_document"] for r in test}),
            "duplicate_documents": duplicate_documents(chunks),
        },
        "mining": {
            "records_with_fewer_negatives": short,
            "model": config["mining"]["model"],
            "precision": encoder.precision,
            "embeddings_from_cache": encoder.cache.hits if encoder.cache else 0,
            "embeddings_computed": encoder.cache.misses if encoder.cache else len(chunks) + len(queries),
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    if stats_path is not None:
        write_json(stats_path, stats)
    return stats


def _chunk_index(
    chunks: list[dict[str, Any]], queries: list[dict[str, Any]], snapshot_path: Any, queries_path: Any
) -> dict[str, int]:
    """Chunk id -> snapshot position; a query naming a chunk the snapshot lacks is refused."""
    index = {c["chunk_id"]: i for i, c in enumerate(chunks)}
    for lineno, q in zip(record_lines(queries_path), queries, strict=False):
        if q["chunk_id"] not in index:
            raise InputError(
                f"'{q['chunk_id']}' is not in {snapshot_path}",
                path=queries_path,
                line=lineno,
                field="chunk_id",
            )
    return index


def _mine(
    chunks: list[dict[str, Any]],
    queries: list[dict[str, Any]],
    index: dict[str, int],
    config: dict[str, Any],
    cache_dir: str | Path,
    timings: dict[str, float],
) -> tuple[list[Any], list[Any], Any]:
    """Hard negatives per query (dense fused with BM25) and, when asked, the teacher's pairs."""
    from ragd_train.bm25 import BM25
    from ragd_train.encoding import CachedEncoder
    from ragd_train.generate.mining import mine

    mining = config["mining"]
    texts = [c["text"] for c in chunks]
    documents = [c["document_id"] for c in chunks]
    positives = [index[q["chunk_id"]] for q in queries]
    query_texts = [q["query"] for q in queries]
    encoder = CachedEncoder(mining["model"], cache_dir, mining["batch_size"], config["encoding"]["precision"])
    t = time.monotonic()
    corpus_emb = encoder.encode(texts)
    query_emb = encoder.encode(query_texts)
    timings["encode_s"] = time.monotonic() - t
    t = time.monotonic()
    bm25 = BM25(texts) if mining["bm25_weight"] > 0 else None
    mined = mine(
        query_emb,
        corpus_emb,
        query_texts,
        bm25,
        positives,
        documents,
        num_negatives=config["generate"]["hard_negatives_per_query"],
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
            query_texts,
            bm25 if bm25 is not None else BM25(texts),
            positives,
            documents,
            candidates=mining["candidates"],
            bm25_share=mining["teacher_bm25_share"],
            seed=config["seed"],
        )
    timings["mine_s"] = time.monotonic() - t
    return mined, pairs, encoder


def _record(
    q: dict[str, Any],
    chunk: dict[str, Any],
    result: Any,
    pair: Any,
    verdict: dict[str, Any],
    chunks: list[dict[str, Any]],
) -> dict[str, Any]:
    """One training record: the query, its positive, its mined negatives and the filter's verdict."""
    record = {
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
    if "heldout_passage" in q:
        record["heldout_passage"] = q["heldout_passage"]
    if pair is not None:
        record["teacher_pair"] = {
            "first": {"id": chunks[pair.first]["chunk_id"], "text": chunks[pair.first]["text"]},
            "second": {"id": chunks[pair.second]["chunk_id"], "text": chunks[pair.second]["text"]},
            "margin": pair.margin,
        }
    return record


def judge_method(judge: Any, generate: dict[str, Any]) -> str:
    if not generate["quality_filter"]:
        return "none"
    return "llm_judge" if judge is not None else "roundtrip"


def _make_judge(config: dict[str, Any], cache_dir: str | Path) -> Any | None:
    """The Ollama judge when Ollama answers and the queries are not no-LLM ones, else None (round-trip)."""
    from ragd_train.generate.llm import LLMJudge

    if config["generate"]["query_generator"] == "nollm":
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


def chat_records(
    history: str | Path,
    chunks: list[dict[str, Any]],
    sides: dict[str, str],
    encoder: Any,
    config: dict[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """The user's own questions from ragd's chat history: (training records, held-out questions,
    stats).

    ``generate.chat_eval_share`` of the questions (by a hash of each) are held out, in the natural
    questions' format, with the documents ragd cited as their relevant documents (the base
    model's own picks: the report shows them and never lets them decide). The others become
    training records labelled by the corpus-only teacher over the training documents only:
    its best chunk is the positive, ``generate.chat_pairs`` pairs of its top candidates carry the
    margins MarginMSE learns from.
    """
    import numpy as np

    from ragd_train.bm25 import BM25
    from ragd_train.generate.teacher import query_rng, teacher_scores
    from ragd_train.ragd.questions import match_citations, read_chat_history, split_questions

    generate, mining, seed = config["generate"], config["mining"], config["seed"]
    questions = read_chat_history(history)
    for warning in questions.warnings:
        log.warning("%s", warning)
    learn, held = split_questions(list(questions), generate["chat_eval_share"], seed)
    matches = {m.question_id: m for m in match_citations(held, chunks)}
    held_out = [
        {
            "query": q.query,
            "query_id": f"chat_{q.question_id}",
            "documents": sorted(matches[q.question_id].document_ids),
            "labels": "ragd's citations",
            "file": q.file,
        }
        for q in held
        if matches[q.question_id].in_index
    ]
    rows = [i for i, c in enumerate(chunks) if sides[c["document_id"]] == "train"]
    records: list[dict[str, Any]] = []
    if learn and len(rows) >= 3:
        texts = [chunks[i]["text"] for i in rows]
        corpus_emb = encoder.encode(texts)
        query_texts = [q.query for q in learn]
        query_emb = encoder.encode(query_texts)
        scores = teacher_scores(
            query_emb @ corpus_emb.T, BM25(texts).scores(query_texts), mining["teacher_bm25_share"]
        )
        k = min(mining["candidates"], len(rows))
        head = max(1, min(5, k // 3))
        for q, row in zip(learn, scores, strict=True):
            top = np.argsort(-row, kind="stable")[:k]
            best = chunks[rows[top[0]]]
            for p in range(generate["chat_pairs"]):
                rng = query_rng(seed + p, q.query)
                first, second = int(rng.choice(top[:head])), int(rng.choice(top[head:]))
                records.append(
                    {
                        "query": q.query,
                        "query_id": f"chat_{q.question_id}_{p}",
                        "positive": best["text"],
                        "positive_id": best["chunk_id"],
                        "negatives": [
                            {"id": chunks[rows[i]]["chunk_id"], "text": texts[i], "score": float(row[i])}
                            for i in top[head : head + generate["hard_negatives_per_query"]]
                        ],
                        "source_document": best["document_id"],
                        "generator": "chat_history",
                        "filter": {"method": "none (a real question)", "kept": True},
                        "teacher_pair": {
                            "first": {"id": chunks[rows[first]]["chunk_id"], "text": texts[first]},
                            "second": {"id": chunks[rows[second]]["chunk_id"], "text": texts[second]},
                            "margin": round(float(row[first] - row[second]), 6),
                        },
                        "split": "train",
                    }
                )
    stats = {
        "source": str(history),
        "questions": len(questions),
        "skipped": dict(questions.skipped),
        "training_questions": len(learn) if records else 0,
        "training_records": len(records),
        "held_out": len(held),
        "held_out_in_index": len(held_out),
    }
    log.info(
        "chat history %s: %s; %d for training (%d records), %d held out (%d cite indexed documents)",
        history,
        questions.summary(),
        stats["training_questions"],
        len(records),
        len(held),
        len(held_out),
    )
    return records, held_out, stats
