"""What the benchmark scripts share; not a benchmark itself (it has no ``main``).

Paths (the repository, the SciFact folder, ``bench/out``), the offline environment, a timestamped
``log``, the SciFact reader, the on-disk embedding cache (one key scheme for every script, so
``bench_embeddings.py --save-model`` fills what bench_reranker.py, bench_gate.py, bench_soup.py and
bench_teacher.py read) and the base-vs-model evaluation and statistics of the SciFact benchmarks.

A script in ``bench/`` imports it by name (``python bench/x.py`` puts ``bench/`` first on
``sys.path``). Importing it changes nothing: :func:`offline` sets the environment and
:func:`use_tests` makes the test suite's fixtures (``tests/ollama_server.py``, ``tests/ragd_home.py``,
``tests/models.py``, ``tests/helpers.py``) importable, for the scripts that want them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "scifact"
DEFAULT_OUT = REPO / "bench" / "out"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ENCODE_BATCH = 64
EVAL_SEQ = 256  # the base model's own max_seq_length, at which the cache is filled
METRIC_KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def offline() -> None:
    """No hub downloads and no tokenizer thread pools, unless the caller's environment says otherwise."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def use_tests() -> None:
    """Put ``tests/`` first on ``sys.path``, so its fixture modules import by name."""
    sys.path.insert(0, str(TESTS))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def plain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed arguments as JSON values (paths as strings), for a results file."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


# ------------------------------------------------------------------------------ data


def load_scifact(data: Path, work: Path) -> dict[str, Any]:
    """Snapshot of the corpus (the package's BEIR reader), queries and qrels of both splits."""
    from ragd_train.snapshot import load_snapshot, sync_snapshot

    t = time.perf_counter()
    snapshot, _ = sync_snapshot("scifact", {"source": "beir", "path": str(data)}, work)
    chunks = load_snapshot(snapshot)
    queries = {}
    with open(data / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            queries[str(record["_id"])] = record["text"]
    qrels: dict[str, dict[str, dict[str, int]]] = {}
    for split in ("test", "train"):
        qrels[split] = {}
        with open(data / "qrels" / f"{split}.tsv", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                qrels[split].setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return {
        "snapshot": snapshot,
        "chunks": chunks,
        "doc_ids": [c["document_id"] for c in chunks],
        "chunk_ids": [c["chunk_id"] for c in chunks],
        "texts": [c["text"] for c in chunks],
        "queries": queries,
        "qrels": qrels,
        "load_s": time.perf_counter() - t,
    }


def claim_ids(d: dict[str, Any], split: str, limit: int | None = None, seed: int = 0) -> list[str]:
    """The claims of ``split`` that have a text, sorted; with ``limit``, a seeded sample of them."""
    qids = sorted(q for q in d["qrels"][split] if q in d["queries"])
    if limit:
        random.Random(seed).shuffle(qids)
        qids = sorted(qids[:limit])
    return qids


def relevant_pairs(d: dict[str, Any], split: str, qids: list[str]) -> list[tuple[str, int]]:
    """(claim, corpus index) for every abstract the qrels of ``split`` mark relevant to each claim."""
    pos = {doc: i for i, doc in enumerate(d["doc_ids"])}
    return [
        (q, pos[doc]) for q in qids for doc, grade in d["qrels"][split][q].items() if grade > 0 and doc in pos
    ]


def without_relevant(
    d: dict[str, Any], split: str, pairs: list[tuple[str, int]], mined: list[Any], k: int
) -> list[list[int]]:
    """Each (claim, abstract) pair's first ``k`` mined negatives that are not relevant to the claim
    (mine() knows only the pair's own positive; the claim's other relevant abstracts are no negatives)."""
    pos = {doc: i for i, doc in enumerate(d["doc_ids"])}
    out = []
    for (q, _), res in zip(pairs, mined, strict=True):
        relevant = {pos[doc] for doc in d["qrels"][split][q] if doc in pos}
        out.append([j for j in res.negatives if j not in relevant][:k])
    return out


# ------------------------------------------------------------------ the embedding cache


def cache_key(key_parts: list[Any], texts: list[str]) -> str:
    """The cache's key: ``key_parts`` (model path, batch size, ...) and the texts, hashed."""
    return hashlib.sha256(json.dumps([*key_parts, texts], ensure_ascii=False).encode()).hexdigest()[:24]


def cache_file(cache: Path, key_parts: list[Any], texts: list[str]) -> Path:
    """Where the embeddings of ``texts`` under ``key_parts`` are stored (``.npy``; ``.json`` next to it)."""
    return cache / f"{cache_key(key_parts, texts)}.npy"


def write_cache(npy: Path, emb: np.ndarray, seconds: float, **info: Any) -> None:
    """Store ``emb`` at ``npy`` (overwriting: a retrained model keeps its directory's key) with a
    ``.json`` of the text count, the encoding time and ``info``."""
    import numpy as np

    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, emb)
    npy.with_suffix(".json").write_text(json.dumps({"texts": len(emb), "seconds": round(seconds, 3), **info}))


def load_model(path: str, max_seq_length: int = EVAL_SEQ) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu", trust_remote_code=False)
    model.max_seq_length = max_seq_length
    return model


def cached_encode(
    model: Any, key_parts: list[Any], texts: list[str], cache: Path | None
) -> tuple[np.ndarray, float, bool]:
    """Encode ``texts`` (unit-normalised); reuse ``cache``."""
    import numpy as np

    from ragd_train.encoding import encode

    npy = cache_file(cache, key_parts, texts) if cache is not None else None
    if npy is not None and npy.is_file():
        return np.load(npy), 0.0, True
    t = time.perf_counter()
    emb = encode(model, texts, ENCODE_BATCH)
    seconds = time.perf_counter() - t
    if npy is not None:
        write_cache(npy, emb, seconds)
    return emb, seconds, False


# ------------------------------------------------------------------------ evaluation


def retrieval(
    d: dict[str, Any],
    test_ids: list[str],
    subset: list[int],
    dims: list[int],
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
) -> Any:
    """``ragd_train.evaluate.ir_metrics.evaluate`` of the test claims against the docs in ``subset``."""
    from ragd_train.evaluate.ir_metrics import evaluate

    return evaluate(
        None,
        {q: d["queries"][q] for q in test_ids},
        {d["doc_ids"][i]: d["texts"][i] for i in subset},
        d["qrels"]["test"],
        dims=dims,
        query_emb=query_emb,
        corpus_emb=corpus_emb,
    )


def per_query_full(result: Any) -> dict[str, list[float]]:
    """Per-query values of every metric at the full dimension (for the paired statistics)."""
    full = max(result.per_query)
    return {m: result.per_query[full][m].tolist() for m in METRIC_KEYS}


def summarise(result: Any) -> dict[str, Any]:
    """Mean metrics per dim, and the per-query values that :func:`versus_base` pairs."""
    return {
        "metrics": {str(k): v for k, v in result.mean().items()},
        "per_query_ndcg@10": {str(k): v["ndcg@10"].round(6).tolist() for k, v in result.per_query.items()},
        "per_query_full": per_query_full(result),
        "query_ids": result.query_ids,
    }


def evaluate_model(
    model: Any,
    d: dict[str, Any],
    test_ids: list[str],
    subset: list[int],
    dims: list[int],
    cache: Path | None,
    key: str | None,
    store_key: str | None = None,
) -> dict[str, Any]:
    """``key``: look the corpus embeddings up in ``cache`` under that model key (and store them there);
    ``store_key``: encode anyway and write the corpus embeddings to ``cache`` under that model key."""
    from ragd_train.encoding import encode

    texts = [d["texts"][i] for i in subset]
    t = time.perf_counter()
    if key is not None:
        corpus_emb, _, cached = cached_encode(model, [key, ENCODE_BATCH], texts, cache)
    else:
        corpus_emb, cached = encode(model, texts, ENCODE_BATCH), False
    encode_corpus_s = time.perf_counter() - t
    if store_key is not None and cache is not None:
        write_cache(cache_file(cache, [store_key, ENCODE_BATCH], texts), corpus_emb, encode_corpus_s)
    t = time.perf_counter()
    query_emb = encode(model, [d["queries"][q] for q in test_ids], ENCODE_BATCH)
    encode_queries_s = time.perf_counter() - t
    result = retrieval(d, test_ids, subset, dims, query_emb, corpus_emb)
    return {
        **summarise(result),
        "encode_corpus_s": round(encode_corpus_s, 2),
        "corpus_cached": cached,
        "encode_queries_s": round(encode_queries_s, 2),
    }


def versus_base(base: dict[str, Any], new: dict[str, Any], samples: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap CI and sign-flip p-value of ``new - base`` per metric (ragd_train.stats)."""
    import numpy as np

    from ragd_train.stats import paired_bootstrap, sign_flip_test

    if base["query_ids"] != new["query_ids"]:
        raise ValueError("base and fine-tuned were evaluated on different queries")
    out = {}
    for m in METRIC_KEYS:
        b, n = np.asarray(base["per_query_full"][m]), np.asarray(new["per_query_full"][m])
        row = paired_bootstrap(b, n, samples=samples, seed=seed)
        row["p_value"] = sign_flip_test(b, n, samples=samples, seed=seed)
        out[m] = {"base": float(b.mean()), "new": float(n.mean()), **row}
    return out
