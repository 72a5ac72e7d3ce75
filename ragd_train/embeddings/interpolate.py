"""A guard against harm: keep only as much of the fine-tuning as the dev split rewards.

WiSE-FT (Wortsman et al., 2022; LM-Cocktail does the same for embedders) interpolates the weights
of the base and the fine-tuned model, ``base + w * (fine-tuned - base)``. Each weight of
``embeddings.interpolation`` is scored on the dev split (documents neither trained on nor tested,
queries never filtered by a retriever) and the best one is shipped; ties go to the smaller weight,
so a fine-tuning that does not help on dev leaves the base (w = 0).
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.jsonl_io import read_records

log = logging.getLogger("ragd_train")
TOP_K = 10


def dev_set(
    dev_path: str | Path, chunks: list[dict[str, Any]], size: int, seed: int
) -> tuple[list[str], list[set[int]], list[str]] | None:
    """(queries, relevant corpus positions, corpus texts) for the dev records, or None when there
    are none. The corpus: every chunk of a dev document (a query's own chunk as its held-out
    passage), the candidates mined for the dev queries, then other chunks in a seeded order, up to
    ``size`` chunks (never fewer than the dev documents' own)."""
    records = read_records(dev_path, required=("query", "positive_id"))
    if not records:
        return None
    position = {c["chunk_id"]: i for i, c in enumerate(chunks)}
    records = [r for r in records if r["positive_id"] in position]
    if not records:
        return None
    dev_docs = {r["source_document"] for r in records if "source_document" in r}
    chosen: dict[int, None] = {}
    for i, c in enumerate(chunks):
        if c["document_id"] in dev_docs:
            chosen[i] = None
    for r in records:
        chosen[position[r["positive_id"]]] = None
        for neg in r.get("negatives") or []:
            if isinstance(neg, dict) and neg.get("id") in position and len(chosen) < size:
                chosen[position[neg["id"]]] = None
    rest = [i for i in range(len(chunks)) if i not in chosen]
    random.Random(seed).shuffle(rest)
    for i in rest[: max(0, size - len(chosen))]:
        chosen[i] = None
    order = list(chosen)
    slot = {i: n for n, i in enumerate(order)}
    texts = [chunks[i]["text"] for i in order]
    by_text: dict[str, set[int]] = {}
    for n, text in enumerate(texts):
        by_text.setdefault(text, set()).add(n)
    queries, relevant = [], []
    for r in records:
        n = slot[position[r["positive_id"]]]
        relevant.append(set(by_text[texts[n]]))  # identical chunks answer alike
        if isinstance(r.get("heldout_passage"), str):
            texts[n] = r["heldout_passage"]
        queries.append(str(r["query"]))
    return queries, relevant, texts


def ndcg_at_10(query_emb: np.ndarray, corpus_emb: np.ndarray, relevant: list[set[int]]) -> float:
    """Mean NDCG@10 with binary relevance (dot products of unit vectors)."""
    k = min(TOP_K, corpus_emb.shape[0])
    scores = query_emb @ corpus_emb.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    total = 0.0
    for row, rel in zip(top, relevant, strict=True):
        dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(row) if int(i) in rel)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        total += dcg / ideal if ideal else 0.0
    return total / len(relevant)


def choose_interpolation(
    model: Any,
    base_path: str,
    dev_path: str | Path | None,
    snapshot_path: str | Path | None,
    weights: list[float],
    *,
    corpus_size: int,
    precision: str,
    seed: int,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score each weight on the dev split, load the best into ``model`` and say what was chosen.

    Returns ``{"weight", "curve": [{"weight", "ndcg@10"}...], "dev_queries", "dev_corpus",
    "reason"}``; without dev data (or with one weight) the fine-tuned model is kept as trained and
    the reason says why.
    """
    import torch

    from ragd_train.encoding import CachedEncoder, encode
    from ragd_train.snapshot import load_snapshot

    weights = sorted(set(weights))
    if weights == [1.0]:
        return {"weight": 1.0, "curve": [], "reason": "embeddings.interpolation is [1.0]: no choice made"}
    if dev_path is None or snapshot_path is None:
        return {"weight": 1.0, "curve": [], "reason": "no dev split (training from a file): kept as trained"}
    data = dev_set(dev_path, load_snapshot(snapshot_path), corpus_size, seed)
    if data is None:
        return {"weight": 1.0, "curve": [], "reason": f"{dev_path} has no dev queries: kept as trained"}
    queries, relevant, texts = data
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(base_path, device="cpu", trust_remote_code=False).state_dict()
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shared = [k for k, v in tuned.items() if k in base and v.is_floating_point() and v.shape == base[k].shape]
    curve: list[dict[str, float]] = []
    with torch.no_grad():
        for w in weights:
            if w == 0.0 and cache_dir is not None:  # the base's vectors, shared with mining
                encoder = CachedEncoder(base_path, cache_dir, precision=precision)
                q_emb, c_emb = encoder.encode(queries), encoder.encode(texts)
            else:
                model.load_state_dict(
                    {k: (base[k] + w * (tuned[k] - base[k]) if k in shared else tuned[k]) for k in tuned}
                )
                q_emb = encode(model, queries, precision=precision)
                c_emb = encode(model, texts, precision=precision)
            curve.append({"weight": w, "ndcg@10": round(ndcg_at_10(q_emb, c_emb, relevant), 6)})
            log.info("interpolation weight %.2f: dev NDCG@10 %.4f", w, curve[-1]["ndcg@10"])
        best = max(curve, key=lambda p: (p["ndcg@10"], -p["weight"]))["weight"]
        model.load_state_dict(
            {k: (base[k] + best * (tuned[k] - base[k]) if k in shared else tuned[k]) for k in tuned}
        )
    reason = (
        "the dev split scores the base best: the base's weights are shipped"
        if best == 0.0
        else f"weight {best:g} scores best on the dev split"
    )
    return {
        "weight": best,
        "curve": curve,
        "dev_queries": len(queries),
        "dev_corpus": len(texts),
        "reason": reason,
    }
