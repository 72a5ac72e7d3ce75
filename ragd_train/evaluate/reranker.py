"""The reranker report: base vs fine-tuned reranker over the embedding models' candidates."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.errors import RagdTrainError
from ragd_train.evaluate.report import conclude, write
from ragd_train.hub import model_kind
from ragd_train.reranker.scoring import PairScorer
from ragd_train.reranker.train import DEFAULT_FALLBACK, HEADLINE, KS

log = logging.getLogger("ragd_train")


def _metric_rows(
    values: dict[str, dict[str, np.ndarray]], reference: dict[str, np.ndarray], samples: int, seed: int
) -> dict[str, Any]:
    from ragd_train.stats import paired_bootstrap, sign_flip_test

    out: dict[str, Any] = {}
    for metric, v in values.items():
        own = paired_bootstrap(np.zeros_like(v), v, samples=samples, seed=seed)  # CI of the mean itself
        diff = paired_bootstrap(reference[metric], v, samples=samples, seed=seed)
        out[metric] = {
            "mean": float(v.mean()),
            "ci_low": own["ci_low"],
            "ci_high": own["ci_high"],
            "delta": diff["delta"],
            "delta_ci_low": diff["ci_low"],
            "delta_ci_high": diff["ci_high"],
            "p_value": sign_flip_test(reference[metric], v, samples=samples, seed=seed),
        }
    return out


def evaluate_rerankers(
    reranker_dir: str | Path,
    embedding_dir: str | Path | None,
    embedding_base: str,
    reranker_base: str,
    test_path: str | Path,
    snapshot_path: str | Path | None,
    *,
    reranker_fallback: str | None = DEFAULT_FALLBACK,
    candidates: int = 50,
    max_length: int | None = None,
    batch_size: int = 32,
    bootstrap_samples: int = 10_000,
    seed: int = 42,
    include_base_reranker: bool = True,
    embed: Callable[[str, list[str]], np.ndarray] | None = None,
    questions_path: str | Path | None = None,
    strict_questions: bool = True,
) -> dict[str, Any]:
    """Retrieve the top ``candidates`` with each embedding model, rerank them with each reranker.

    Every combination (retriever x {none, base reranker, fine-tuned reranker}) gets NDCG@10 and
    MRR@10 with a 95% bootstrap CI of its mean and of its difference to the retriever alone, on
    the held-out synthetic queries and, with ``questions_path``, on natural questions (a hit per
    document; then the headline). ``embed(model_name, texts)`` replaces the encoder (the rule
    passes the embedding cache's).
    """
    from ragd_train.encoding import encode, load_encoder
    from ragd_train.evaluate.embeddings import corpus_from_test, load_questions, load_test_set, to_documents
    from ragd_train.evaluate.ir_metrics import METRICS, normalize, recall_at_k, retrieve
    from ragd_train.snapshot import load_snapshot

    start = time.monotonic()
    queries, qrels_map = load_test_set(test_path)
    chunks = load_snapshot(snapshot_path) if snapshot_path else corpus_from_test(test_path)
    doc_ids = [c["chunk_id"] for c in chunks]
    texts = [c["text"] for c in chunks]
    missing = sorted({d for rel in qrels_map.values() for d in rel} - set(doc_ids))
    if missing:
        raise RagdTrainError(
            f"{test_path}: positive_id {missing[0]!r} (and {len(missing) - 1} more) not in corpus"
        )
    qids = list(queries)
    qrels = [qrels_map[q] for q in qids]
    qtexts = [queries[q] for q in qids]
    # (name, first query, end, qrels, level): the natural questions follow the synthetic queries
    sets = [("synthetic", 0, len(qids), qrels, "chunk")]
    if questions_path:
        nq, nq_qrels = load_questions(questions_path, chunks, strict=strict_questions)
        sets.insert(0, ("questions", len(qids), len(qids) + len(nq), [nq_qrels[q] for q in nq], "document"))
        qtexts += list(nq.values())
    document_of = {c["chunk_id"]: c["document_id"] for c in chunks}
    k = min(candidates, len(doc_ids))
    timings: dict[str, float] = {}

    retrievers = {"base": embedding_base} | ({"finetuned": str(embedding_dir)} if embedding_dir else {})
    top: dict[str, np.ndarray] = {}
    for side, name in retrievers.items():
        t = time.monotonic()
        if embed is None:
            model = load_encoder(name)
            corpus_emb, query_emb = encode(model, texts), encode(model, qtexts)
            del model
        else:
            corpus_emb, query_emb = embed(name, texts), embed(name, qtexts)
        top[side], _ = retrieve(normalize(query_emb), normalize(corpus_emb), k)
        timings[f"retrieve_{side}"] = round(time.monotonic() - t, 2)

    rerankers = ({"base": reranker_base} if include_base_reranker else {}) | {"finetuned": str(reranker_dir)}
    notes: dict[str, str | None] = {}
    scores: dict[str, dict[tuple[int, int], float]] = {}
    kind = model_kind(reranker_dir)  # the base reranker is scored the way the fine-tuned one is
    for side, name in rerankers.items():
        t = time.monotonic()
        scorer = PairScorer(
            name,
            kind=kind if side == "base" else None,
            max_length=max_length,
            batch_size=batch_size,
            fallback=reranker_fallback if side == "base" else None,
            seed=seed,
        )
        notes[side] = scorer.note
        if side == "base" and scorer.fresh_head:
            notes[side] = (scorer.note or f"'{name}' has no trained scoring head") + (
                ": its head is untrained (a cross-encoder's scores are noise), shown for completeness"
            )
        per_query = [sorted({int(d) for r in top.values() for d in r[i]}) for i in range(len(qtexts))]
        got = scorer.score(qtexts, [[texts[d] for d in docs] for docs in per_query])
        scores[side] = {
            (i, d): float(s) for i, docs in enumerate(per_query) for d, s in zip(docs, got[i], strict=True)
        }
        timings[f"rerank_{side}"] = round(time.monotonic() - t, 2)
        del scorer

    combos: list[dict[str, Any]] = []
    recall: dict[str, float] = {}
    for set_name, lo, hi, set_qrels, level in sets:

        def metrics(ranked: list[list[str]], set_qrels=set_qrels, level=level) -> dict[str, np.ndarray]:
            if level == "document":
                ranked = to_documents(ranked, document_of)
            return {f"{m}@{c}": METRICS[m](ranked, set_qrels, c) for m, cut in KS.items() for c in cut}

        per_query: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for retr, idx in top.items():
            plain = [[doc_ids[d] for d in row] for row in idx[lo:hi]]
            if set_name == sets[0][0]:
                ranked_docs = to_documents(plain, document_of) if level == "document" else plain
                recall[retr] = float(recall_at_k(ranked_docs, set_qrels, k).mean())
            per_query[(retr, "none")] = metrics(plain)
            for rr in rerankers:
                ranked = []
                for i, row in enumerate(idx[lo:hi], start=lo):
                    order = sorted(range(len(row)), key=lambda j, i=i, row=row: -scores[rr][(i, int(row[j]))])
                    ranked.append([doc_ids[int(row[j])] for j in order])
                per_query[(retr, rr)] = metrics(ranked)
        for (retr, rr), values in per_query.items():
            combos.append(
                {
                    "test_set": set_name,
                    "retriever": retr,
                    "reranker": rr,
                    "metrics": _metric_rows(values, per_query[(retr, "none")], bootstrap_samples, seed),
                }
            )
    main_retriever = "finetuned" if "finetuned" in top else "base"
    primary = sets[0][0]
    head_row = next(
        c
        for c in combos
        if c["test_set"] == primary and c["retriever"] == main_retriever and c["reranker"] == "finetuned"
    )
    alone = next(
        c
        for c in combos
        if c["test_set"] == primary and c["retriever"] == main_retriever and c["reranker"] == "none"
    )
    h = head_row["metrics"][HEADLINE]
    improved = h["delta"] > 0
    report = {
        "reranker": str(reranker_dir),
        "reranker_base": reranker_base,
        "reranker_notes": notes,
        "embedding": str(embedding_dir) if embedding_dir else None,
        "embedding_base": embedding_base,
        "test_data": str(test_path),
        "snapshot": str(snapshot_path) if snapshot_path else "positives and negatives of the test data",
        "queries": len(qids),
        "questions": str(questions_path) if questions_path else None,
        "corpus_size": len(doc_ids),
        "candidates": k,
        f"recall@{k}": recall,
        "combinations": combos,
        "headline": {
            "metric": HEADLINE,
            "test_set": primary,
            "retriever": main_retriever,
            "comparison": f"{main_retriever} embeddings + fine-tuned reranker vs the embeddings alone",
            "base": alone["metrics"][HEADLINE]["mean"],
            "finetuned": h["mean"],
            "delta": h["delta"],
            "ci_low": h["delta_ci_low"],
            "ci_high": h["delta_ci_high"],
            "p_value": h["p_value"],
        },
        "verdict": "improves" if improved else "does not improve",
        "timings_s": timings | {"total": round(time.monotonic() - start, 2)},
    }
    return conclude(report, "reranker", improved, reranker_message(report))


NAMES = {"base": "base", "finetuned": "fine-tuned", "none": "none"}


def reranker_message(report: dict[str, Any]) -> str:
    """One sentence: does the fine-tuned reranker improve on its retriever alone?"""
    h = report["headline"]
    numbers = (
        f"NDCG@10 {h['base']:.4f} -> {h['finetuned']:.4f} (delta {h['delta']:+.4f}, 95% CI "
        f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], p={h['p_value']:.3g})"
    )
    who = f"the {NAMES[h['retriever']]} embedding model's top {report['candidates']}"
    if h.get("test_set") == "questions":
        numbers = f"natural questions: {numbers}"
    if report["verdict"] == "improves":
        return f"Reranking {who} with the fine-tuned reranker improves retrieval: {numbers}."
    return f"Reranking {who} with the fine-tuned reranker does NOT improve retrieval: {numbers}."


def markdown_reranker_report(report: dict[str, Any]) -> str:
    k = report["candidates"]
    lines = [
        f"# Reranker evaluation: {Path(report['reranker']).name}",
        "",
        reranker_message(report),
        "",
        f"{report['queries']} test queries from `{report['test_data']}` against "
        f"{report['corpus_size']} chunks; each embedding model retrieves the top {k}, "
        "which each reranker reorders.",
        "",
        f"- embeddings: base `{report['embedding_base']}`, fine-tuned "
        + (f"`{report['embedding']}`" if report["embedding"] else "(none given)"),
        f"- rerankers: base `{report['reranker_base']}`"
        + ("" if any(c["reranker"] == "base" for c in report["combinations"]) else " (not evaluated)")
        + f", fine-tuned `{report['reranker']}`",
        f"- recall@{k} of the candidates (the ceiling for reranking): "
        + ", ".join(f"{NAMES[s]} {v:.4f}" for s, v in report[f"recall@{k}"].items()),
        "",
    ]
    for side, note in report["reranker_notes"].items():
        if note:
            lines += [f"> {NAMES[side]} reranker: {note}", ""]
    lines += [
        "| test set | embeddings | reranker | NDCG@10 [95% CI] | vs embeddings alone "
        "| MRR@10 [95% CI] | vs embeddings alone |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in report["combinations"]:
        cells = []
        for metric in ("ndcg@10", "mrr@10"):
            m = c["metrics"][metric]
            cells.append(f"{m['mean']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]")
            cells.append(
                "-"
                if c["reranker"] == "none"
                else f"{m['delta']:+.4f} [{m['delta_ci_low']:+.4f}, {m['delta_ci_high']:+.4f}], "
                f"p={m['p_value']:.3g}"
            )
        test_set = c.get("test_set", "synthetic")
        lines.append(
            f"| {test_set} | {NAMES[c['retriever']]} | {NAMES[c['reranker']]} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"Timings (s): {json.dumps(report['timings_s'])}"]
    return "\n".join(lines) + "\n"


def write_reranker_report(report: dict[str, Any], json_path: str | Path, md_path: str | Path) -> None:
    write(report, json_path, md_path, markdown_reranker_report(report))
