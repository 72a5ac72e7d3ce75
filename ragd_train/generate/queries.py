"""Synthetic queries for every chunk of a snapshot: by an LLM (Ollama or in-process) or without one."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from ragd_train.cache import GenerationCache
from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import write_jsonl
from ragd_train.progress import track
from ragd_train.snapshot import load_snapshot

log = logging.getLogger("ragd_train")
QUERY_FIELDS = ("query_id", "query", "chunk_id", "generator")


def make_generator(chunks: list[dict[str, Any]], config: dict[str, Any], cache_dir: str | Path) -> Any:
    """Pick the query generator the config asks for; ``auto`` falls back to no-LLM, saying so once."""
    from ragd_train.generate.llm import LLMQueryGenerator
    from ragd_train.generate.nollm import NoLLMGenerator

    generate, seed = config["generate"], config["seed"]
    choice = generate["query_generator"]
    cache = GenerationCache(cache_dir, "generations")
    if choice in ("auto", "ollama"):
        from ragd_train.chat.connect import connect

        required_by = "generate.query_generator" if choice == "ollama" else ""
        llm, problem = connect(config, required_by=required_by, instead="nollm")
        if llm is not None:
            return LLMQueryGenerator(llm, cache, temperature=config["ollama"]["temperature"], seed=seed)
        made = llm_made_chunks(chunks, cache)
        if made:
            raise RagdTrainError(
                f"{problem}, and {made} of the corpus's {len(chunks)} chunks have LLM-written queries "
                "in the cache: falling back would retrain on no-LLM queries instead. Start Ollama, or "
                "set generate.query_generator: nollm to replace them"
            )
        message = f"{problem}: falling back to the no-LLM query generator"
        log.warning("%s", message)
        print(f"ragd-train: {message}", flush=True)  # the console, not only the rule's log
    elif choice == "local":
        from ragd_train.chat.local import LocalChatLLM

        llm = LocalChatLLM(generate["local_model"], seed=seed, threads=1)  # more threads oversubscribe
        return LLMQueryGenerator(llm, cache, temperature=config["ollama"]["temperature"], seed=seed)
    return NoLLMGenerator(chunks, generate["nollm_strategies"], seed=seed)


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
    """Write synthetic queries for every snapshot chunk to ``out_path``: ``queries_per_chunk`` by
    the configured generator for the chunks of training documents, and one by the no-LLM
    ``heldout_strategies`` for the chunks of dev and test documents (the split is decided per
    document first: ``ragd_train.generate.split``)."""
    from ragd_train.generate.nollm import NoLLMGenerator
    from ragd_train.generate.split import assign_documents

    start = time.monotonic()
    generate = config["generate"]
    chunks = load_snapshot(snapshot_path)
    sides = assign_documents(chunks, config["seed"], generate["test_ratio"], generate["dev_ratio"])
    generator = make_generator(chunks, config, cache_dir)
    # crop only where no held-out strategy finds a sentence (a table, a code block)
    fallback = [s for s in ("crop",) if s not in generate["heldout_strategies"]]
    heldout = NoLLMGenerator(chunks, [*generate["heldout_strategies"], *fallback], seed=config["seed"])
    n = generate["queries_per_chunk"]
    records: list[dict[str, Any]] = []
    empty = 0
    for chunk in track(chunks, f"generating queries ({generator.name})"):
        side = sides[chunk["document_id"]]
        writer = generator if side == "train" else heldout
        queries = writer.generate(chunk, n if side == "train" else 1)
        empty += not queries
        for q in queries:
            record = {
                "query_id": query_id(chunk, q["query"]),
                "query": q["query"],
                "chunk_id": chunk["chunk_id"],
                "generator": f"{writer.name}/{q['strategy']}" if writer.name == "nollm" else writer.name,
                "split": side,
            }
            if "positive" in q:
                record["positive"] = q["positive"]
            if side != "train" and "passage" in q:
                record["heldout_passage"] = q["passage"]
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
        "documents": {side: sum(1 for s in sides.values() if s == side) for side in ("train", "dev", "test")},
        "heldout_strategies": list(generate["heldout_strategies"]),
        "from_cache": cache.hits if cache else 0,
        "generated": (cache.misses if cache else len(chunks)) - getattr(generator, "failures", 0),
        "failed": getattr(generator, "failures", 0),
        "wall_time_s": round(time.monotonic() - start, 3),
    }
    log.info("generated %d queries for %d chunks with %s", len(records), len(chunks), generator.name)
    return stats
