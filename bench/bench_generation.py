"""Benchmark: no-LLM query generation and hard-negative mining on SciFact, next to sentence-transformers.

In one run, on the BEIR SciFact corpus (read in place, never copied) and the offline
``sentence-transformers/all-MiniLM-L6-v2``:

1. builds the snapshot and times no-LLM query generation (chunks/s), for the configured
   strategy mix (in memory and through the pipeline's ``generate_queries``) and per strategy;
2. encodes the corpus and the generated queries once (timed on its own: encoding dominates and
   is shared by both miners), then times ``ragd_train.generate.mining.mine`` (dense + BM25 RRF fusion,
   relative-margin guard) and sentence-transformers' ``util.mine_hard_negatives`` on the same
   queries, positives and corpus with comparable settings. ST is handed the same precomputed
   embeddings through a model wrapper whose ``encode_query``/``encode_document`` look the texts
   up, so "mining only" compares the miners alone; "end-to-end" adds the shared encoding time
   (``--st-reencode`` makes ST encode by itself as well, measured rather than derived);
3. checks quality on SciFact's human qrels: for each test query one relevant document is the
   positive and the other relevant documents are hidden; a mined negative that is one of them is
   a false negative (lower is better);
4. prints a comparison table and writes the results as JSON to ``bench/out/``.

Run ``python bench/bench_generation.py --help``; quick run:
``python bench/bench_generation.py --corpus-limit 500 --limit-queries 300``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import DEFAULT_DATA, DEFAULT_OUT, MODEL, cache_file, offline, write_cache

offline()


# ----------------------------------------------------------------------------- helpers


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall time and the CPU time this process spent on it (all threads).

    On a shared machine wall time is mostly scheduling; CPU time says what the work costs.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def summary(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "runs_s": [round(t, 4) for t in times]}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


class PrecomputedEncoder:
    """A SentenceTransformer stand-in for ``mine_hard_negatives``: encoding is a lookup.

    ``encode_query``/``encode_document`` return the rows of precomputed, unit-normalised
    embeddings for the given texts; everything else (``device``, ``similarity``,
    ``similarity_pairwise``, ...) is the real model's.
    """

    def __init__(self, model: Any, texts: list[str], embeddings: np.ndarray) -> None:
        self._model = model
        self._row: dict[str, int] = {}
        for i, text in enumerate(texts):
            self._row.setdefault(text, i)
        self._embeddings = embeddings
        self.lookups = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def _lookup(self, texts: list[str], **_: Any) -> np.ndarray:
        self.lookups += len(texts)
        return self._embeddings[[self._row[t] for t in texts]]

    encode_query = _lookup
    encode_document = _lookup
    encode = _lookup


class EmbeddingStore:
    """Shared encoding: each text list is encoded once (optionally cached on disk across runs)."""

    def __init__(self, model: Any, model_path: str, batch_size: int, cache_dir: Path | None) -> None:
        self.model = model
        self.model_path = model_path
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.timings: dict[str, dict[str, Any]] = {}

    def encode(self, label: str, texts: list[str]) -> np.ndarray:
        from ragd_train.encoding import encode

        if self.cache_dir is not None:
            npy = cache_file(self.cache_dir, [self.model_path, self.batch_size], texts)
            meta = npy.with_suffix(".json")
            if npy.is_file() and meta.is_file():
                info = json.loads(meta.read_text())
                self.timings[label] = {**info, "cached": True}
                return np.load(npy)
        emb, seconds, cpu = measured(lambda: encode(self.model, texts, self.batch_size))
        more = {"cpu_s": round(cpu, 3), "texts_per_s": round(rate(len(texts), seconds), 2)}
        self.timings[label] = {"texts": len(texts), "seconds": round(seconds, 3), **more, "cached": False}
        if self.cache_dir is not None:
            write_cache(npy, emb, seconds, **more)
        return emb


# -------------------------------------------------------------------------- generation


def bench_generation(args: argparse.Namespace, config: dict[str, Any], work: Path) -> dict[str, Any]:
    """Snapshot build, then no-LLM generation: in memory (mix and per strategy) and via the pipeline."""
    from ragd_train.generate.nollm import NoLLMGenerator
    from ragd_train.generate.queries import generate_queries
    from ragd_train.snapshot import read_source, sync_snapshot, validate_chunks

    cfg: dict[str, Any] = {"source": "beir", "path": str(args.data)}
    if args.corpus_limit:
        cfg["limit"] = args.corpus_limit
    chunks, read_s = timed(lambda: read_source("beir", cfg))
    _, validate_s = timed(lambda: validate_chunks(chunks, args.data))
    (snapshot, _changed), sync_s = timed(lambda: sync_snapshot("scifact", cfg, work))
    generate = config["generate"]
    strategies = list(generate["nollm_strategies"])
    n = generate["queries_per_chunk"]
    seed = config["seed"]

    def run(strats: list[str], per_chunk: int) -> dict[str, Any]:
        best: dict[str, Any] | None = None
        for _ in range(args.gen_repeats):
            gen, init_s = timed(lambda: NoLLMGenerator(chunks, strats, seed=seed))
            out, loop_s = timed(lambda: [gen.generate(c, per_chunk) for c in chunks])  # noqa: B023
            if best is None or init_s + loop_s < best["init_s"] + best["generate_s"]:
                best = {"init_s": init_s, "generate_s": loop_s, "out": out}
        assert best is not None
        out = best.pop("out")
        total = best["init_s"] + best["generate_s"]
        by_strategy: dict[str, int] = {}
        for queries in out:
            for q in queries:
                by_strategy[q["strategy"]] = by_strategy.get(q["strategy"], 0) + 1
        return {
            "strategies": strats,
            "queries_per_chunk": per_chunk,
            "chunks": len(chunks),
            "queries": sum(len(q) for q in out),
            "queries_by_strategy": by_strategy,
            "chunks_without_query": sum(not q for q in out),
            "init_s": round(best["init_s"], 4),
            "generate_s": round(best["generate_s"], 4),
            "chunks_per_s": round(rate(len(chunks), total), 1),
            "chunks_per_s_excl_init": round(rate(len(chunks), best["generate_s"]), 1),
        }

    mix = run(strategies, n)
    per_strategy = {s: run([s], 1) for s in strategies}
    queries_path = work / "queries.jsonl"
    stats, pipeline_s = timed(
        lambda: generate_queries(snapshot, queries_path, config, cache_dir=work / "cache")
    )
    return {
        "snapshot": {
            "chunks": len(chunks),
            "documents": len({c["document_id"] for c in chunks}),
            "read_s": round(read_s, 4),
            "validate_s": round(validate_s, 4),
            "sync_snapshot_s": round(sync_s, 4),
        },
        "mix": mix,
        "per_strategy": per_strategy,
        "pipeline": {
            "function": "ragd_train.generate.queries.generate_queries (load snapshot, generate, write JSONL)",
            "chunks": stats["chunks"],
            "queries": stats["queries"],
            "chunks_without_query": stats["chunks_without_query"],
            "seconds": round(pipeline_s, 4),
            "chunks_per_s": round(rate(stats["chunks"], pipeline_s), 1),
        },
        "_snapshot_path": str(snapshot),
        "_queries_path": str(queries_path),
    }


# ------------------------------------------------------------------------------ mining


def run_ours(
    q_emb: np.ndarray,
    c_emb: np.ndarray,
    queries: list[str],
    positives: list[int],
    texts: list[str],
    documents: list[str],
    settings: dict[str, Any],
    *,
    use_bm25: bool,
    bm25: Any = None,
) -> tuple[list[list[int]], dict[str, float], list[Any]]:
    """Our miner; the BM25 index is built inside the timing unless one is passed in."""
    from ragd_train.bm25 import BM25
    from ragd_train.generate.mining import mine

    bm25_s = bm25_cpu = 0.0
    if use_bm25 and bm25 is None:
        bm25, bm25_s, bm25_cpu = measured(lambda: BM25(texts))
    results, mine_s, mine_cpu = measured(
        lambda: mine(
            q_emb,
            c_emb,
            queries,
            bm25 if use_bm25 else None,
            positives,
            documents,
            num_negatives=settings["num_negatives"],
            candidates=settings["candidates"],
            bm25_weight=settings["bm25_weight"] if use_bm25 else 0.0,
            relative_margin=settings["relative_margin"],
            exclude_same_document=settings["exclude_same_document"],
        )
    )
    timing = {
        "bm25_index_s": bm25_s,
        "mine_s": mine_s,
        "total_s": bm25_s + mine_s,
        "cpu_s": bm25_cpu + mine_cpu,
    }
    return [r.negatives for r in results], timing, results


def run_st(
    model: Any,
    queries: list[str],
    positives: list[int],
    texts: list[str],
    settings: dict[str, Any],
) -> tuple[list[list[int]], dict[str, float], dict[str, Any]]:
    """sentence-transformers' miner on the same inputs; negatives mapped back to corpus indices."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    dataset = Dataset.from_dict({"query": queries, "positive": [texts[p] for p in positives]})
    out, seconds, cpu = measured(
        lambda: mine_hard_negatives(
            dataset,
            model,
            corpus=texts,
            range_max=settings["candidates"],
            relative_margin=settings["relative_margin"],
            num_negatives=settings["num_negatives"],
            sampling_strategy="top",
            batch_size=settings["batch_size"],
            output_format="labeled-list",
            use_faiss=False,
            verbose=False,
        )
    )
    # What part of ST's time is building the text Dataset it returns (ours returns indices).
    columns = out.to_dict()
    _, dataset_s = timed(lambda: Dataset.from_dict(columns))
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        first.setdefault(text, i)
    by_pair: dict[tuple[str, str], list[int]] = {}
    for query, docs in zip(columns["query"], columns["positive"], strict=True):
        by_pair[(query, docs[0])] = [first[d] for d in docs[1:]]
    negatives = [by_pair.get((q, texts[p]), []) for q, p in zip(queries, positives, strict=True)]
    info = {"unique_queries": len(set(queries)), "rows": len(out)}
    return negatives, {"total_s": seconds, "cpu_s": cpu, "dataset_build_s": dataset_s}, info


def negatives_stats(negatives: list[list[int]], k: int) -> dict[str, Any]:
    counts = [len(n) for n in negatives]
    return {
        "negatives_per_query": round(statistics.mean(counts), 3) if counts else 0.0,
        "queries_with_k": sum(c >= k for c in counts),
        "queries_with_none": sum(c == 0 for c in counts),
        "queries": len(counts),
    }


def overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean |A ∩ B| / max(|A|, |B|) over queries (1.0 = the same negative sets)."""
    vals = [len(set(x) & set(y)) / max(len(x), len(y)) for x, y in zip(a, b, strict=True) if x or y]
    return round(statistics.mean(vals), 4) if vals else 1.0


def false_negatives(negatives: list[list[int]], hidden: list[set[int]], multi: list[bool]) -> dict[str, Any]:
    """Share of mined negatives that qrels mark relevant (the hidden, non-positive relevant docs)."""

    def rate_over(rows: list[int]) -> dict[str, Any]:
        total = sum(len(negatives[i]) for i in rows)
        bad = sum(len(set(negatives[i]) & hidden[i]) for i in rows)
        return {
            "queries": len(rows),
            "negatives": total,
            "false_negatives": bad,
            "rate": round(bad / total, 5) if total else 0.0,
            "queries_with_fn": sum(bool(set(negatives[i]) & hidden[i]) for i in rows),
        }

    everything = list(range(len(negatives)))
    return {"all": rate_over(everything), "multi_relevant": rate_over([i for i in everything if multi[i]])}


def load_qrels_queries(data: Path, splits: list[str], chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """SciFact queries with human qrels: positive = first relevant doc, the others hidden."""
    from ragd_train.jsonl_io import read_jsonl

    doc_index = {c["document_id"]: i for i, c in enumerate(chunks)}
    text = {str(q["_id"]): q["text"] for q in read_jsonl(data / "queries.jsonl", ("_id", "text"))}
    relevant: dict[str, list[int]] = {}
    for split in splits:
        lines = (data / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        for line in lines[1:]:
            qid, did, score = line.split("\t")
            if int(score) > 0 and did in doc_index and qid in text:
                docs = relevant.setdefault(qid, [])
                if doc_index[did] not in docs:
                    docs.append(doc_index[did])
    qids = sorted(relevant, key=lambda q: (len(q), q))
    return {
        "query_ids": qids,
        "queries": [text[q] for q in qids],
        "positives": [relevant[q][0] for q in qids],
        "hidden": [set(relevant[q][1:]) for q in qids],
        "multi": [len(relevant[q]) > 1 for q in qids],
    }


# -------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="BEIR SciFact folder (default: %(default)s)"
    )
    p.add_argument("--corpus-limit", type=int, default=None, help="use only the first N documents")
    p.add_argument(
        "--limit-queries", type=int, default=None, help="mine a seeded sample of N generated queries"
    )
    p.add_argument(
        "--qrels", default="test", help="qrels splits for the false-negative check (e.g. test,train)"
    )
    p.add_argument("--config", type=Path, action="append", default=[], help="extra config YAML to merge")
    p.add_argument(
        "--num-negatives", type=int, default=None, help="default: generate.hard_negatives_per_query"
    )
    p.add_argument("--candidates", type=int, default=None, help="ours: mining.candidates; ST: range_max")
    p.add_argument("--relative-margin", type=float, default=0.05)
    p.add_argument(
        "--repeats", type=int, default=3, help="timed mining runs per miner (median and min reported)"
    )
    p.add_argument("--gen-repeats", type=int, default=1, help="timed generation runs (best kept)")
    p.add_argument("--st-reencode", action="store_true", help="also time ST end-to-end encoding by itself")
    p.add_argument(
        "--embedding-cache",
        type=Path,
        default=None,
        help="reuse embeddings across runs from this folder (encode time then is the one recorded)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "bench_generation.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data = args.data.resolve()
    if not (args.data / "corpus.jsonl").is_file():
        print(f"no corpus.jsonl in {args.data} (pass --data)", file=sys.stderr)
        return 2

    import torch

    from ragd_train.config import load_config
    from ragd_train.hub import resolve_model
    from ragd_train.jsonl_io import read_jsonl
    from ragd_train.snapshot import load_snapshot

    wall0 = time.perf_counter()
    load_start = load_average()
    config = load_config(args.config, overrides={"generate": {"query_generator": "nollm"}})
    mining, generate = config["mining"], config["generate"]
    settings = {
        "num_negatives": args.num_negatives or generate["hard_negatives_per_query"],
        "candidates": args.candidates or mining["candidates"],
        "relative_margin": args.relative_margin,
        "bm25_weight": mining["bm25_weight"],
        "exclude_same_document": mining["exclude_same_document"],
        "batch_size": mining["batch_size"],
    }
    results: dict[str, Any] = {
        "benchmark": "bench_generation",
        "data": str(args.data),
        "model": MODEL,
        "settings": {
            **settings,
            "strategies": generate["nollm_strategies"],
            "queries_per_chunk": generate["queries_per_chunk"],
            "seed": config["seed"],
            "corpus_limit": args.corpus_limit,
            "limit_queries": args.limit_queries,
            "qrels": args.qrels,
            "repeats": args.repeats,
        },
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "load_average_start": load_start,
        },
    }

    with tempfile.TemporaryDirectory(prefix="bench_generation_") as tmp:
        work = Path(tmp)
        print(f"[1/4] snapshot + no-LLM generation on {args.data} ...", flush=True)
        gen = bench_generation(args, config, work)
        chunks = load_snapshot(gen.pop("_snapshot_path"))
        generated = read_jsonl(gen.pop("_queries_path"), ("query", "chunk_id"))
    results["generation"] = gen

    texts = [c["text"] for c in chunks]
    documents = [c["document_id"] for c in chunks]
    index = {c["chunk_id"]: i for i, c in enumerate(chunks)}
    if args.limit_queries and args.limit_queries < len(generated):
        keep = sorted(random.Random(config["seed"]).sample(range(len(generated)), args.limit_queries))
        generated = [generated[i] for i in keep]
    queries = [q["query"] for q in generated]
    positives = [index[q["chunk_id"]] for q in generated]
    qrels = load_qrels_queries(args.data, [s for s in args.qrels.split(",") if s], chunks)

    print(
        f"[2/4] encoding {len(texts)} chunks, {len(queries)} + {len(qrels['queries'])} queries ...",
        flush=True,
    )
    from ragd_train.encoding import load_encoder

    model_path = resolve_model(MODEL)
    model, load_s = timed(lambda: load_encoder(MODEL))
    store = EmbeddingStore(model, model_path, settings["batch_size"], args.embedding_cache)
    c_emb = store.encode("corpus", texts)
    q_emb = store.encode("generated_queries", queries)
    t_emb = store.encode("qrels_queries", qrels["queries"]) if qrels["queries"] else None
    encode_s = store.timings["corpus"]["seconds"] + store.timings["generated_queries"]["seconds"]
    results["encoding"] = {
        "model_load_s": round(load_s, 3),
        "batch_size": settings["batch_size"],
        **store.timings,
        "shared_encode_s": round(encode_s, 3),
    }

    print(f"[3/4] mining {len(queries)} generated queries, {args.repeats} runs each ...", flush=True)
    st_model = PrecomputedEncoder(
        model,
        texts + queries + qrels["queries"],
        np.concatenate([c_emb, q_emb] + ([t_emb] if t_emb is not None else [])),
    )
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "ours_dense": [], "st": []}
    out_neg: dict[str, list[list[int]]] = {}
    st_info: dict[str, Any] = {}
    ours_results: list[Any] = []
    for r in range(args.repeats):
        order = ["ours", "ours_dense", "st"] if r % 2 == 0 else ["st", "ours_dense", "ours"]
        for name in order:
            if name == "st":
                neg, timing, st_info = run_st(st_model, queries, positives, texts, settings)
            else:
                neg, timing, res = run_ours(
                    q_emb, c_emb, queries, positives, texts, documents, settings, use_bm25=name == "ours"
                )
                if name == "ours":
                    ours_results = res
            runs[name].append(timing)
            out_neg[name] = neg

    st_e2e: dict[str, Any] | None = None
    if args.st_reencode:
        print("      ST end-to-end with its own encoding ...", flush=True)
        _, timing, _ = run_st(model, queries, positives, texts, settings)
        st_e2e = {"total_s": round(timing["total_s"], 3)}

    print("[4/4] false-negative check on qrels ...", flush=True)
    fn: dict[str, Any] = {}
    if t_emb is not None:
        from ragd_train.bm25 import BM25

        bm25 = BM25(texts)
        for name in ("ours", "ours_dense", "st"):
            if name == "st":
                neg, _, _ = run_st(st_model, qrels["queries"], qrels["positives"], texts, settings)
            else:
                neg, _, _ = run_ours(
                    t_emb,
                    c_emb,
                    qrels["queries"],
                    qrels["positives"],
                    texts,
                    documents,
                    settings,
                    use_bm25=name == "ours",
                    bm25=bm25,
                )
            fn[name] = {
                **false_negatives(neg, qrels["hidden"], qrels["multi"]),
                **negatives_stats(neg, settings["num_negatives"]),
            }

    k = settings["num_negatives"]
    mining_out: dict[str, Any] = {"queries": len(queries), "unique_queries": st_info.get("unique_queries")}
    labels = {
        "ours": "ours: mine() dense+BM25 RRF, margin guard",
        "ours_dense": "ours: mine() dense only (bm25_weight 0)",
        "st": "sentence-transformers mine_hard_negatives",
    }
    for name, timings in runs.items():
        total = [t["total_s"] for t in timings]
        entry: dict[str, Any] = {
            "label": labels[name],
            "mining_only": summary(total),
            "mining_only_cpu": summary([t["cpu_s"] for t in timings]),
            "end_to_end_s": round(statistics.median(total) + encode_s, 3),
            **negatives_stats(out_neg[name], k),
        }
        if name == "ours":
            entry["bm25_index_s"] = summary([t["bm25_index_s"] for t in timings])
            entry["mine_s"] = summary([t["mine_s"] for t in timings])
            entry["positive_score_below_zero"] = sum(r.positive_score < 0 for r in ours_results)
        if name == "st":
            entry["dataset_build_s"] = summary([t["dataset_build_s"] for t in timings])
            entry["rows"] = st_info.get("rows")
            if st_e2e:
                entry["end_to_end_measured_s"] = st_e2e["total_s"]
        if name != "st":
            entry["overlap_with_st"] = overlap(out_neg[name], out_neg["st"])
        mining_out[name] = entry
    results["mining"] = mining_out
    results["false_negatives"] = {
        "qrels": args.qrels,
        "queries": len(qrels["queries"]),
        "multi_relevant_queries": sum(qrels["multi"]),
        **fn,
    }
    ours_med = mining_out["ours"]["mining_only"]["median_s"]
    st_med = mining_out["st"]["mining_only"]["median_s"]
    ours_cpu = mining_out["ours"]["mining_only_cpu"]["median_s"]
    st_cpu = mining_out["st"]["mining_only_cpu"]["median_s"]
    results["verdict"] = {
        "ours_mining_median_s": round(ours_med, 4),
        "st_mining_median_s": round(st_med, 4),
        "speedup_vs_st": round(st_med / ours_med, 3) if ours_med else None,
        "ours_mining_cpu_s": round(ours_cpu, 4),
        "st_mining_cpu_s": round(st_cpu, 4),
        "cpu_ratio_st_over_ours": round(st_cpu / ours_cpu, 3) if ours_cpu else None,
        "ours_not_slower": ours_med <= st_med,
        "ours_not_slower_cpu": ours_cpu <= st_cpu,
    }
    results["environment"]["load_average_end"] = load_average()
    results["wall_s"] = round(time.perf_counter() - wall0, 1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    print_report(results)
    print(f"\nresults: {args.out}")
    return 0


def print_report(r: dict[str, Any]) -> None:
    g, e, m, fn = r["generation"], r["encoding"], r["mining"], r["false_negatives"]
    s = r["settings"]
    print(f"\n== SciFact: {g['snapshot']['chunks']} chunks; model {r['model']} ==")
    print(
        f"snapshot: read {g['snapshot']['read_s']:.2f}s, validate {g['snapshot']['validate_s']:.2f}s, "
        f"sync_snapshot {g['snapshot']['sync_snapshot_s']:.2f}s"
    )
    print("\nNo-LLM generation")
    print(
        f"{'strategy':<28} {'q/chunk':>7} {'queries':>8} {'no query':>8} "
        f"{'init s':>7} {'gen s':>7} {'chunks/s':>9}"
    )
    rows = [("+".join(g["mix"]["strategies"]) + " (mix)", g["mix"])]
    rows += [(name, v) for name, v in g["per_strategy"].items()]
    for name, v in rows:
        print(
            f"{name:<28} {v['queries_per_chunk']:>7} {v['queries']:>8} {v['chunks_without_query']:>8} "
            f"{v['init_s']:>7.2f} {v['generate_s']:>7.2f} {v['chunks_per_s']:>9.0f}"
        )
    p = g["pipeline"]
    print(
        f"{'generate_queries() pipeline':<28} {s['queries_per_chunk']:>7} {p['queries']:>8} "
        f"{p['chunks_without_query']:>8} {'':>7} {p['seconds']:>7.2f} {p['chunks_per_s']:>9.0f}"
    )

    print(f"\nEncoding (shared by both miners, batch {e['batch_size']}, model load {e['model_load_s']:.1f}s)")
    for label in ("corpus", "generated_queries", "qrels_queries"):
        if label in e:
            v = e[label]
            cached = " (cached from an earlier run)" if v.get("cached") else ""
            cpu = f", cpu {v['cpu_s']:.0f}s" if "cpu_s" in v else ""
            print(
                f"  {label:<18} {v['texts']:>6} texts {v['seconds']:>8.1f}s "
                f"{v['texts_per_s']:>8.1f}/s{cpu}{cached}"
            )

    print(
        f"\nMining {m['queries']} generated queries ({m['unique_queries']} unique): k={s['num_negatives']}, "
        f"candidates/range_max={s['candidates']}, relative_margin={s['relative_margin']}, "
        f"median of {s['repeats']} runs"
    )
    head = (
        f"{'method':<44} {'mine s':>7} {'min s':>7} {'cpu s':>6} {'e2e s':>7} {'neg/q':>6} {'full k':>7} "
        f"{'FN rate':>8} {'FN multi':>8} {'ovl ST':>6}"
    )
    print(head)
    print("-" * len(head))
    for name in ("ours", "ours_dense", "st"):
        v = m[name]
        f = fn.get(name, {})
        rate_all = f"{f['all']['rate']:.2%}" if f else "-"
        rate_multi = f"{f['multi_relevant']['rate']:.2%}" if f else "-"
        ovl = f"{v['overlap_with_st']:.2f}" if "overlap_with_st" in v else "-"
        print(
            f"{v['label']:<44} {v['mining_only']['median_s']:>7.2f} {v['mining_only']['min_s']:>7.2f} "
            f"{v['mining_only_cpu']['median_s']:>6.2f} {v['end_to_end_s']:>7.1f} "
            f"{v['negatives_per_query']:>6.2f} "
            f"{v['queries_with_k'] / max(v['queries'], 1):>7.1%} {rate_all:>8} {rate_multi:>8} {ovl:>6}"
        )
    o, st = m["ours"], m["st"]
    print(
        f"  ours = BM25 index {o['bm25_index_s']['median_s']:.2f}s + mine() {o['mine_s']['median_s']:.2f}s; "
        f"ST includes building its text Dataset ({st['dataset_build_s']['median_s']:.2f}s)"
    )
    if "end_to_end_measured_s" in st:
        print(f"  ST end-to-end with its own encoding, measured: {st['end_to_end_measured_s']:.1f}s")
    if fn.get("ours"):
        print(
            f"  FN rate: share of mined negatives that {fn['qrels']} qrels mark relevant; "
            f"{fn['queries']} qrels queries, {fn['multi_relevant_queries']} with >1 relevant doc "
            "(FN multi: those only)"
        )
        for name in ("ours", "ours_dense", "st"):
            a = fn[name]["all"]
            print(
                f"    {name:<11} {a['false_negatives']:>3} of {a['negatives']:>5} negatives, "
                f"{a['queries_with_fn']} queries affected, {fn[name]['negatives_per_query']:.2f} neg/q"
            )
    print(
        "  mine s / min s: wall time, median / min of the runs; cpu s: median CPU time of this process "
        "(all threads; steadier than wall time when the machine is shared)"
    )
    v = r["verdict"]
    word = "NOT slower" if v["ours_not_slower"] else "SLOWER"
    word_cpu = "NOT slower" if v["ours_not_slower_cpu"] else "SLOWER"
    print(
        f"\nverdict: ours mining {v['ours_mining_median_s']:.2f}s vs ST {v['st_mining_median_s']:.2f}s wall "
        f"(x{v['speedup_vs_st']}) -> ours is {word}; CPU {v['ours_mining_cpu_s']:.2f}s vs "
        f"{v['st_mining_cpu_s']:.2f}s -> {word_cpu}"
    )
    print(
        f"total wall {r['wall_s']:.0f}s; load average start {r['environment']['load_average_start']}, "
        f"end {r['environment']['load_average_end']} ({r['environment']['cpus']} CPUs)"
    )


if __name__ == "__main__":
    sys.exit(main())
