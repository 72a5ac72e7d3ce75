"""A/B evaluation of a fine-tuned embedding model against its base on held-out queries.

IR metrics per query (full and Matryoshka dims), paired bootstrap CIs and a sign-flip test on
the difference, RAGAS ID-based context precision/recall, a promotion gate, JSON/Markdown/PNG.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.errors import RagdTrainError
from ragd_train.evaluate.report import conclude, write
from ragd_train.jsonl_io import atomic_open, read_records
from ragd_train.metadata import metadata_path, read_metadata
from ragd_train.ragd.search import HybridSearch
from ragd_train.snapshot import load_snapshot
from ragd_train.stats import paired_bootstrap, sign_flip_test

log = logging.getLogger("ragd_train")
KS = {"ndcg": [10], "mrr": [10], "recall": [1, 10, 100]}
HEADLINE = "ndcg@10"
RAGAS_TOP_K = 10
# A test set on which the base already ranks an answer first this often cannot show a gain: it is
# reported as "cannot tell" and never decides the gate.
CEILING_MRR = 0.95


def heldout_passages(test_path: str | Path) -> dict[str, str]:
    """Positive id -> the passage a held-out query is evaluated against (its chunk without the
    sentence the query was taken from; ``generate.heldout_strategies``)."""
    out: dict[str, str] = {}
    for record in read_records(test_path, required=("positive_id",)):
        passage = record.get("heldout_passage")
        if isinstance(passage, str) and passage.strip():
            out.setdefault(str(record["positive_id"]), passage)
    return out


def same_text_qrels(
    qrels: dict[str, dict[str, int]], chunks: list[dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Chunk qrels where every chunk with the same text as a positive counts as relevant too
    (identical chunks under different names answer alike)."""
    by_text: dict[str, list[str]] = {}
    text_of = {}
    for c in chunks:
        by_text.setdefault(c["text"], []).append(c["chunk_id"])
        text_of[c["chunk_id"]] = c["text"]
    return {
        q: {twin: 1 for pid in rel for twin in by_text.get(text_of.get(pid, ""), [pid])} | rel
        for q, rel in qrels.items()
    }


def load_test_set(test_path: str | Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries and qrels from test records (``query``, ``positive_id``; ``query_id`` optional)."""
    records = read_records(test_path, required=("query", "positive_id"))
    if not records:
        raise RagdTrainError(f"{test_path}: no test records")
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i, record in enumerate(records):
        qid = str(record.get("query_id") or f"q{i}")
        queries[qid] = str(record["query"])
        qrels.setdefault(qid, {})[str(record["positive_id"])] = 1
    return queries, qrels


def corpus_from_test(test_path: str | Path) -> list[dict[str, Any]]:
    """A corpus made of the test records' positives and negatives (when no snapshot is given)."""
    corpus: dict[str, tuple[str, str]] = {}
    for record in read_records(test_path, required=("positive_id", "positive")):
        pid = str(record["positive_id"])
        corpus.setdefault(pid, (str(record["positive"]), str(record.get("source_document") or pid)))
        for neg in record.get("negatives") or []:
            if isinstance(neg, dict) and "id" in neg and "text" in neg:
                corpus.setdefault(str(neg["id"]), (str(neg["text"]), str(neg["id"])))
    return [{"chunk_id": cid, "document_id": doc, "text": text} for cid, (text, doc) in corpus.items()]


def model_dims(model_dir: str | Path, full: int) -> list[int]:
    """The model's Matryoshka dims from its metadata (full dim first), else just the full dim."""
    meta_path = metadata_path(model_dir)
    dims = read_metadata(meta_path, partial=True).matryoshka_dims if meta_path.exists() else None
    return sorted(set(dims or []) | {full}, reverse=True)


def _ragas_id_metrics(ranked: list[list[str]], qrels: list[dict[str, int]]) -> dict[str, Any]:
    """Mean RAGAS ID-based context precision and recall over the top ``RAGAS_TOP_K`` contexts."""
    try:
        import asyncio

        from ragas.dataset_schema import SingleTurnSample
        from ragas.metrics import IDBasedContextPrecision, IDBasedContextRecall
    except ImportError as exc:
        return {
            "status": "skipped",
            "reason": f"ragas is not installed (pip install 'ragd-train[eval]'): {exc}",
        }
    precision, recall = IDBasedContextPrecision(), IDBasedContextRecall()

    async def score_all() -> tuple[list[float], list[float]]:
        p, r = [], []
        for docs, rel in zip(ranked, qrels, strict=True):
            sample = SingleTurnSample(
                retrieved_context_ids=docs[:RAGAS_TOP_K], reference_context_ids=list(rel)
            )
            p.append(float(await precision.single_turn_ascore(sample)))
            r.append(float(await recall.single_turn_ascore(sample)))
        return p, r

    p, r = asyncio.run(score_all())
    return {
        "status": "ok",
        "top_k": RAGAS_TOP_K,
        "id_context_precision": float(np.mean(p)),
        "id_context_recall": float(np.mean(r)),
    }


def _ragas_llm(
    llm: Any,
    note: str,
    base_model: str,
    queries: list[str],
    ranked: dict[str, list[list[str]]],
    chunks: list[dict[str, Any]],
    max_queries: int,
    cache_dir: str | Path,
    seed: int,
    budget_minutes: float = 0,
) -> dict[str, Any]:
    from ragd_train.evaluate.ragas import LLM_METRICS

    skipped = {"status": "skipped", "metrics": list(LLM_METRICS)}
    if llm is None or max_queries == 0:
        return {**skipped, "reason": note if llm is None else "evaluation.ragas_llm_queries is 0"}
    try:
        import ragas  # noqa: F401
    except ImportError as exc:
        return {**skipped, "reason": f"ragas is not installed (pip install 'ragd-train[eval]'): {exc}"}
    from ragd_train.encoding import load_encoder
    from ragd_train.evaluate.ragas import ragas_llm_metrics

    by_id = {c["chunk_id"]: c for c in chunks}
    retrieved = {side: [[by_id[d] for d in docs] for docs in ranked[side]] for side in ranked}
    return ragas_llm_metrics(
        queries,
        retrieved,
        llm,
        load_encoder(base_model),
        cache_dir=cache_dir,
        max_queries=max_queries,
        seed=seed,
        budget_minutes=budget_minutes,
    )


def _rank(
    query_emb: np.ndarray, corpus_emb: np.ndarray, doc_ids: list[str], dim: int, k: int
) -> list[list[str]]:
    from ragd_train.evaluate.ir_metrics import normalize, retrieve

    idx, _ = retrieve(normalize(query_emb, dim), normalize(corpus_emb, dim), min(k, len(doc_ids)))
    return [[doc_ids[i] for i in row] for row in idx]


def load_questions(
    path: str | Path, chunks: list[dict[str, Any]], *, strict: bool = True
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Natural questions (``query``, ``documents``: the ids of the documents that answer it) as
    queries and document-level qrels. An unknown document is an error at its line; with
    ``strict`` off (a corpus cut by ``limit``) it is left out, and so is a question left with none."""
    from ragd_train.errors import InputError

    records = read_records(path, required=("query", "documents"), strings=("query",))
    lines = [n for n, raw in enumerate(Path(path).read_bytes().split(b"\n"), 1) if raw.strip()]
    known = {c["document_id"] for c in chunks}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for line, record in zip(lines, records, strict=False):
        docs = record["documents"]
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            raise InputError(
                "expected a non-empty list of document ids", path=path, line=line, field="documents"
            )
        unknown = [d for d in docs if d not in known]
        if unknown and strict:
            raise InputError(
                f"document {unknown[0]!r} is not in the corpus snapshot",
                path=path,
                line=line,
                field="documents",
            )
        qid = str(record.get("query_id") or f"nq{line}")
        if qid in queries:
            raise InputError(f"duplicate query_id {qid!r}", path=path, line=line, field="query_id")
        if len(unknown) < len(docs):
            queries[qid] = record["query"]
            qrels[qid] = {d: 1 for d in docs if d in known}
    if not queries:
        raise InputError("no questions whose documents are in the corpus snapshot", path=path)
    if len(queries) < len(records):
        log.warning(
            "%s: %d of %d questions kept (the others' documents are not in the snapshot)",
            path,
            len(queries),
            len(records),
        )
    return queries, qrels


def to_documents(ranked: list[list[str]], document_of: dict[str, str]) -> list[list[str]]:
    """Chunk rankings as document rankings: each document at the rank of its best chunk."""
    return [list(dict.fromkeys(document_of[c] for c in row)) for row in ranked]


def _metric_rows(
    ranked: dict[str, list[list[str]]], qrels: list[dict[str, int]], samples: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per metric: each side's mean, and the paired bootstrap CI and sign-flip p of the change."""
    from ragd_train.evaluate.ir_metrics import METRICS

    values = {
        side: {f"{m}@{k}": METRICS[m](r, qrels, k) for m, cut in KS.items() for k in cut}
        for side, r in ranked.items()
    }
    rows: dict[str, dict[str, Any]] = {}
    for metric in values["finetuned"]:
        row: dict[str, Any] = {side: float(values[side][metric].mean()) for side in values}
        if "base" in values:
            b, f = values["base"][metric], values["finetuned"][metric]
            row.update(paired_bootstrap(b, f, samples=samples, seed=seed))
            row["p_value"] = sign_flip_test(b, f, samples=samples, seed=seed)
        rows[metric] = row
    return rows


def _training_summary(model_dir: str | Path) -> dict[str, Any]:
    """What the model's metadata says of its training: the step plan (and whether the clock set
    it) and the interpolation weight chosen on the dev split."""
    path = metadata_path(model_dir)
    if not path.exists():
        return {}
    meta = read_metadata(path, partial=True).model_dump()
    plan = meta.get("training_plan") or {}
    return {
        "steps": plan.get("steps"),
        "limited_by": plan.get("limited_by"),
        "from_clock": plan.get("from_clock", str(plan.get("limited_by", "")).endswith("budget_minutes")),
        "precision": meta.get("precision"),
        "interpolation": meta.get("interpolation") or {},
    }


def gate_reasons(
    head: dict[str, Any],
    retrieval: list[dict[str, Any]],
    require_improvement: float,
    require_significant: bool,
) -> list[str]:
    """Why the promotion gate rejects the model (empty: promoted). ``head`` is the headline
    NDCG@10 row; a significant NDCG@10 loss on any row of ``retrieval`` also rejects."""
    delta = head.get("delta", 0.0)
    reasons = []
    if delta <= 0:
        reasons.append("no gain")  # a tie is not an improvement
    elif delta < require_improvement:
        reasons.append(
            f"gain {delta:+.4f} is below evaluation.require_improvement {require_improvement:+.4f}"
        )
    elif require_significant and head.get("ci_low", 0.0) <= 0:
        reasons.append("the 95% CI of the gain reaches zero (evaluation.require_significant)")
    losses = [
        f"{r['test_set']} {r['mode']}" for r in retrieval if r["metrics"][HEADLINE].get("ci_high", 0.0) < 0
    ]
    if losses:
        reasons.append("a significant NDCG@10 loss on " + ", ".join(losses))
    return reasons


def evaluate_models(
    model_dir: str | Path,
    base_model: str,
    test_path: str | Path,
    snapshot_path: str | Path | None,
    *,
    require_improvement: float = 0.0,
    require_significant: bool = True,
    mode: str = "hybrid",
    questions_path: str | Path | None = None,
    strict_questions: bool = True,
    chat_path: str | Path | None = None,
    bootstrap_samples: int = 10_000,
    seed: int = 42,
    llm: Any = None,
    llm_note: str = "no LLM reachable",
    ragas_llm_queries: int = 20,
    ragas_llm_minutes: float = 10,
    cache_dir: str | Path | None = "cache",
    precision: str = "auto",
) -> dict[str, Any]:
    """Compare ``model_dir`` with ``base_model`` against the whole snapshot.

    Test sets: the held-out synthetic split (``test_path``, chunk-level qrels) and, when given,
    natural questions (``questions_path``, document-level qrels), each searched dense alone and
    through ragd's hybrid search (``HybridSearch``). The headline and the promotion gate use the
    questions when there are some, else the split, in ``mode`` (ragd's default: hybrid). The gate
    promotes only a gain of at least ``require_improvement`` whose 95% CI lies above zero (with
    ``require_significant``), and never a model with a significant NDCG@10 loss on any set or mode.
    With ``llm`` (an ``OllamaLLM``), RAGAS's LLM-judged metrics run on the first
    ``ragas_llm_queries`` queries, stopping after the query that outlasts ``ragas_llm_minutes``
    (0 = no limit); otherwise they are reported as skipped with ``llm_note``.
    """
    import tempfile

    from ragd_train.encoding import CachedEncoder

    start = time.monotonic()
    queries, qrels_map = load_test_set(test_path)
    chunks = load_snapshot(snapshot_path) if snapshot_path else corpus_from_test(test_path)
    doc_ids = [c["chunk_id"] for c in chunks]
    known = set(doc_ids)
    missing = sorted({d for rel in qrels_map.values() for d in rel} - known)
    if missing:
        raise RagdTrainError(
            f"{test_path}: positive_id {missing[0]!r} (and {len(missing) - 1} more) not in {snapshot_path}"
        )
    questions, question_qrels = (
        load_questions(questions_path, chunks, strict=strict_questions) if questions_path else ({}, {})
    )
    chat, chat_qrels = ({}, {})
    if chat_path is not None and Path(chat_path).stat().st_size > 0:
        chat, chat_qrels = load_questions(chat_path, chunks, strict=False)
    qrels_map = same_text_qrels(qrels_map, chunks)
    passages = heldout_passages(test_path)
    position = {cid: i for i, cid in enumerate(doc_ids)}
    held_rows = [position[pid] for pid in passages]
    # the synthetic set's corpus: each held-out positive as its passage without the query sentence
    held_chunks = [c | {"text": passages[c["chunk_id"]]} if c["chunk_id"] in passages else c for c in chunks]
    qids = list(queries)
    qrels = [qrels_map[q] for q in qids]
    max_k = max(k for cut in KS.values() for k in cut)
    fetch = max_k * HybridSearch.FETCH_MULTIPLIER
    sides: dict[str, dict[str, Any]] = {}
    for side, name in (("base", base_model), ("finetuned", str(model_dir))):
        t = time.monotonic()
        encoder = CachedEncoder(name, cache_dir, precision=precision)
        corpus_emb = encoder.encode([c["text"] for c in chunks])
        held_emb = corpus_emb.copy()
        if held_rows:
            held_emb[held_rows] = encoder.encode(list(passages.values()))
        query_emb = encoder.encode([queries[q] for q in qids])
        question_emb = encoder.encode(list(questions.values())) if questions else None
        chat_emb = encoder.encode(list(chat.values())) if chat else None
        full = int(corpus_emb.shape[1])
        sides[side] = {
            "model": name,
            "dim": full,
            "corpus_emb": corpus_emb,
            "held_emb": held_emb,
            "query_emb": query_emb,
            "question_emb": question_emb,
            "chat_emb": chat_emb,
            "encode_s": time.monotonic() - t,
            "precision": encoder.precision,
        }
    dims = model_dims(model_dir, sides["finetuned"]["dim"])
    per_dim: dict[str, Any] = {}
    ranked_full: dict[str, list[list[str]]] = {}
    for dim in dims:
        ranked: dict[str, list[list[str]]] = {}
        for side in ("base", "finetuned"):
            s = sides[side]
            # A base with fewer dimensions is compared at its own full dimension.
            ranked[side] = _rank(s["query_emb"], s["held_emb"], doc_ids, min(dim, s["dim"]), max_k)
        if dim == dims[0]:
            ranked_full = ranked
        per_dim[str(dim)] = _metric_rows(ranked, qrels, bootstrap_samples, seed)

    # Every test set, dense alone and through ragd's hybrid search, at the full dimension.
    document_of = {c["chunk_id"]: c["document_id"] for c in chunks}
    sets = {"synthetic": (qids, queries, qrels, "query_emb", "chunk", "held_emb")}
    if questions:
        q_ids = list(questions)
        sets = {
            "questions": (
                q_ids,
                questions,
                [question_qrels[q] for q in q_ids],
                "question_emb",
                "document",
                "corpus_emb",
            )
        } | sets
    if chat:
        c_ids = list(chat)
        sets["chat"] = (c_ids, chat, [chat_qrels[q] for q in c_ids], "chat_emb", "document", "corpus_emb")
    retrieval: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ragd-train-hybrid-") as tmp:
        searches = {"corpus_emb": HybridSearch(chunks, Path(tmp) / "corpus")}
        searches["held_emb"] = (
            HybridSearch(held_chunks, Path(tmp) / "held") if held_rows else searches["corpus_emb"]
        )
        for set_name, (ids, texts, set_qrels, emb_key, level, corpus_key) in sets.items():
            hybrid = searches[corpus_key]
            query_texts = [texts[q] for q in ids]
            dense = {
                side: _rank(sides[side][emb_key], sides[side][corpus_key], doc_ids, sides[side]["dim"], fetch)
                for side in ("base", "finetuned")
            }
            for mode_name in ("dense", "hybrid"):
                if mode_name == "dense":
                    by_side = {side: [row[:max_k] for row in rows] for side, rows in dense.items()}
                else:
                    by_side = {}
                    share = None
                    for side, rows in dense.items():
                        top10 = hybrid.rank(query_texts, rows, 10)
                        share = hybrid.keyword_share
                        top100 = hybrid.rank(query_texts, rows, max_k)
                        by_side[side] = [
                            list(dict.fromkeys(a + b))[:max_k] for a, b in zip(top10, top100, strict=True)
                        ]
                if level == "document":
                    by_side = {side: to_documents(rows, document_of) for side, rows in by_side.items()}
                metrics = _metric_rows(by_side, set_qrels, bootstrap_samples, seed)
                retrieval.append(
                    {
                        "test_set": set_name,
                        "mode": mode_name,
                        "level": level,
                        "queries": len(ids),
                        "metrics": metrics,
                        "base_mrr@10": metrics["mrr@10"]["base"],
                        "base_recall@10": metrics["recall@10"]["base"],
                        "ceiling": metrics["mrr@10"]["base"] >= CEILING_MRR,
                    }
                    | (
                        {"labels": "ragd's citations: the base model's own picks"}
                        if set_name == "chat"
                        else {}
                    )
                    | ({"keyword_share": share} if mode_name == "hybrid" else {})
                )
        implementation = searches["corpus_emb"].implementation
    # The set that decides: natural questions when there are some, else the held-out synthetic
    # queries, in ``mode``; a set at the ceiling cannot tell, and then neither can the report.
    # (chat questions are labelled by the documents ragd cited, i.e. chosen by the base: reported,
    # never deciding, and a loss on them says little)
    candidates = [r for r in retrieval if r["mode"] == mode and r["test_set"] != "chat"]
    deciding = next((r for r in candidates if not r["ceiling"]), None)
    primary = deciding or candidates[0]
    primary_set = primary["test_set"]
    head = primary["metrics"][HEADLINE]
    unbiased = [r for r in retrieval if r["test_set"] != "chat"]
    reasons = gate_reasons(head, unbiased, require_improvement, require_significant)
    if deciding is None:
        reasons.insert(
            0,
            f"cannot tell: every test set is at the ceiling in {mode} search (the base's MRR@10 is "
            f"at least {CEILING_MRR}), so none can show a gain",
        )
    training = _training_summary(model_dir)
    if training.get("interpolation", {}).get("weight") == 0.0:
        reasons.insert(0, "the dev split chose the base's weights (interpolation weight 0)")
    ragas = {side: _ragas_id_metrics(ranked_full[side], qrels) for side in ranked_full}
    ragas["llm_judged"] = _ragas_llm(
        llm,
        llm_note,
        base_model,
        [queries[q] for q in qids],
        ranked_full,
        chunks,
        ragas_llm_queries,
        cache_dir or "cache",
        seed,
        ragas_llm_minutes,
    )
    verdict = "rejected" if reasons else "promoted"
    report = {
        "model": str(model_dir),
        "base_model": base_model,
        "test_data": str(test_path),
        "questions": str(questions_path) if questions_path else None,
        "chat_questions": len(chat),
        "snapshot": str(snapshot_path) if snapshot_path else "positives and negatives of the test data",
        "queries": len(qids),
        "corpus_size": len(doc_ids),
        "dims": dims,
        "base_dim": sides["base"]["dim"],
        "metrics": per_dim,
        "retrieval": retrieval,
        "hybrid": {
            "implementation": implementation,
            "rrf_k": HybridSearch.RRF_K,
            "fetch_multiplier": HybridSearch.FETCH_MULTIPLIER,
        },
        "headline": {
            "metric": HEADLINE,
            "test_set": primary_set,
            "mode": mode,
            "queries": primary["queries"],
            "dim": dims[0],
            "base": head.get("base"),
            "finetuned": head["finetuned"],
            "delta": head.get("delta"),
            "ci_low": head.get("ci_low"),
            "ci_high": head.get("ci_high"),
            "p_value": head.get("p_value"),
            "decided": deciding is not None,
        },
        "training": training,
        "gate": {
            "require_improvement": require_improvement,
            "require_significant": require_significant,
            "verdict": verdict,
            "reasons": reasons,
        },
        "ragas": ragas,
        "encoding": {"precision": sides["finetuned"]["precision"]},
        "timings_s": {f"encode_{side}": round(sides[side]["encode_s"], 2) for side in sides}
        | {"total": round(time.monotonic() - start, 2)},
    }
    return conclude(report, "embeddings", verdict == "promoted", gate_message(report))


SET_NAMES = {
    "questions": "natural questions",
    "synthetic": "held-out synthetic queries",
    "chat": "your held-out chat questions (labels: ragd's citations)",
}


def gate_message(report: dict[str, Any]) -> str:
    """One plain sentence on whether the model beat its base, where and by how much."""
    h, gate = report["headline"], report["gate"]
    where = ""
    if "test_set" in h:
        where = f"{h['mode']} search, {h['queries']} {SET_NAMES[h['test_set']]}: "
    numbers = (
        f"{where}NDCG@10 {h['base']:.4f} -> {h['finetuned']:.4f} (delta {h['delta']:+.4f}, 95% CI "
        f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], p={h['p_value']:.3g})"
    )
    clock = ""
    if (report.get("training") or {}).get("from_clock"):
        clock = (
            " Its step count came from the clock (embeddings.budget_minutes), so a rebuild on a busier "
            "or idler machine gives another model."
        )
    if gate["verdict"] == "promoted":
        return f"The fine-tuned model is better than its base: {numbers}.{clock}"
    why = "; ".join(gate.get("reasons") or []) or f"required gain {gate['require_improvement']:+.4f}"
    lost = any("significant NDCG@10 loss" in r for r in gate.get("reasons") or [])
    if h.get("decided") is False and not lost:  # a set at the ceiling can still show a loss
        return (
            f"The report cannot tell whether the fine-tuned model is better than its base ({why}): "
            f"{numbers}. Keep using the base model.{clock}"
        )
    return (
        f"The fine-tuned model is NOT better than its base ({why}): {numbers}. "
        f"Keep using the base model.{clock}"
    )


def retrieval_table(report: dict[str, Any]) -> list[str]:
    """Markdown rows: every test set and search mode, base vs fine-tuned, with the CI of the change."""
    lines = [
        "| test set | search | queries | room | metric | base | fine-tuned | delta | 95% CI | p |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.get("retrieval", []):
        mode = r["mode"]
        if "keyword_share" in r:
            mode += f" ({r['keyword_share']:.0%} with keyword hits)"
        room = "cannot tell (at the ceiling)" if r.get("ceiling") else "yes"
        if "base_mrr@10" in r:
            room += f": base MRR@10 {r['base_mrr@10']:.3f}, Recall@10 {r['base_recall@10']:.3f}"
        for name in (HEADLINE, "recall@10", "recall@100"):
            m = r["metrics"][name]
            lines.append(
                f"| {SET_NAMES[r['test_set']]} ({r['level']}s) | {mode} | {r['queries']} | {room} | {name} | "
                f"{m['base']:.4f} | {m['finetuned']:.4f} | {m['delta']:+.4f} | "
                f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | {m['p_value']:.3g} |"
            )
    return lines


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """The change of NDCG@10 with its 95% CI for every test set and search mode (the deciding one
    marked, sets at the ceiling grey), the dev split's interpolation curve, and NDCG@10 by
    Matryoshka dimension when the model has several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("retrieval", [])
    curve = ((report.get("training") or {}).get("interpolation") or {}).get("curve") or []
    dims = [int(d) for d in report["metrics"]]
    panels = 1 + bool(curve) + (len(dims) > 1)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels + 1, 4.2), squeeze=False)
    left, extra = axes[0][0], list(axes[0][1:])
    head = report["headline"]
    labels, colors = [], []
    for i, r in enumerate(rows):
        m = r["metrics"][HEADLINE]
        decides = (
            head.get("decided") is not False
            and r["test_set"] == head.get("test_set")
            and r["mode"] == head.get("mode")
        )
        color = "#b0b0b0" if r.get("ceiling") else ("#2f7ed8" if decides else "#555555")
        left.errorbar(
            m["delta"],
            i,
            xerr=[[m["delta"] - m["ci_low"]], [m["ci_high"] - m["delta"]]],
            fmt="D" if decides else "o",
            color=color,
            capsize=4,
            markersize=8 if decides else 6,
        )
        label = f"{SET_NAMES[r['test_set']]}, {r['mode']} (n={r['queries']})"
        if r.get("ceiling"):
            label += "\ncannot tell: base at the ceiling"
        elif decides:
            label += "\ndecides the verdict"
        labels.append(label)
        colors.append(color)
    left.axvline(0, color="#999999", linewidth=1)
    left.set_yticks(range(len(rows)), labels, fontsize=8)
    for tick, color in zip(left.get_yticklabels(), colors, strict=True):
        tick.set_color(color)
    left.invert_yaxis()
    left.set_xlabel("NDCG@10 change, fine-tuned - base (95% CI)")
    left.set_title(f"{Path(report['model']).name} vs base", fontsize=10)
    if curve:
        ax = extra.pop(0)
        chosen = report["training"]["interpolation"].get("weight")
        ws = [p["weight"] for p in curve]
        ax.plot(ws, [p["ndcg@10"] for p in curve], marker="o", color="#2f7ed8")
        for p in curve:
            if p["weight"] == chosen:
                ax.plot([p["weight"]], [p["ndcg@10"]], marker="*", markersize=16, color="#d8452f")
        ax.set_xlabel("weight of the fine-tuning (0 = base, 1 = as trained)")
        ax.set_ylabel("dev NDCG@10")
        ax.set_title(f"interpolation on the dev split (shipped: {chosen:g})", fontsize=10)
    if len(dims) > 1:
        ax = extra.pop(0)
        for side, color in (("base", "#9aa5b1"), ("finetuned", "#2f7ed8")):
            ys = [report["metrics"][str(d)][HEADLINE].get(side, np.nan) for d in dims]
            ax.plot(dims, ys, marker="o", color=color, label=side)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("embedding dimension (Matryoshka)")
        ax.set_ylabel("NDCG@10 (held-out synthetic, dense)")
        ax.legend()
    fig.suptitle(gate_message(report).split(":")[0], fontsize=10)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def markdown_report(report: dict[str, Any], png_name: str) -> str:
    lines = [
        f"# Evaluation: {Path(report['model']).name}",
        "",
        gate_message(report),
        "",
        f"Base model: `{report['base_model']}`; {report['queries']} test queries "
        f"from `{report['test_data']}` "
        f"against {report['corpus_size']} chunks.",
        "",
        f"![evaluation]({png_name})",
        "",
    ]
    training = report.get("training") or {}
    if training:
        how = (
            "the clock (embeddings.budget_minutes): not reproducible"
            if training.get("from_clock")
            else (f"{training.get('limited_by')}, from the data, not the clock")
        )
        lines += [
            "## Training",
            "",
            f"- {training.get('steps')} steps, set by {how}; arithmetic {training.get('precision')}.",
        ]
        interp = training.get("interpolation") or {}
        if interp:
            lines.append(f"- Shipped weights: {interp.get('reason')}.")
            if interp.get("curve"):
                lines += [
                    f"- Dev split: {interp.get('dev_queries')} queries, "
                    f"{interp.get('dev_corpus')} chunks searched.",
                    "",
                    "| weight of the fine-tuning | dev NDCG@10 |",
                    "| --- | --- |",
                    *[f"| {p['weight']:g} | {p['ndcg@10']:.4f} |" for p in interp["curve"]],
                ]
        lines.append("")
    if report.get("retrieval"):
        lines += [
            "## Where ragd searches",
            "",
            f"Hybrid = {report['hybrid']['implementation']} (k={report['hybrid']['rrf_k']}, "
            f"fetch x{report['hybrid']['fetch_multiplier']}), as `ragd search` ranks; dense = the "
            "embedding model alone. Natural questions count a hit per document, synthetic queries "
            "per chunk. ragd's keyword search requires every word of the query in the chunk, so for "
            "most questions it finds nothing and hybrid ranks as dense does.",
            "",
            *retrieval_table(report),
            "",
        ]
    for dim, metrics in report["metrics"].items():
        lines += [
            f"## Dimension {dim} (dense, held-out synthetic queries)",
            "",
            "| metric | base | fine-tuned | delta | 95% CI | p |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, row in metrics.items():
            if "base" in row:
                lines.append(
                    f"| {name} | {row['base']:.4f} | {row['finetuned']:.4f} | {row['delta']:+.4f} | "
                    f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | {row['p_value']:.3g} |"
                )
            else:
                lines.append(f"| {name} | - | {row['finetuned']:.4f} | - | - | - |")
        lines.append("")
    lines += ["## RAGAS", ""]
    for side in ("base", "finetuned"):
        r = report["ragas"].get(side, {})
        if r.get("status") == "ok":
            lines.append(
                f"- {side}: ID-based context precision@{r['top_k']} {r['id_context_precision']:.4f}, "
                f"ID-based context recall@{r['top_k']} {r['id_context_recall']:.4f}"
            )
        else:
            lines.append(f"- {side}: skipped ({r.get('reason')})")
    llm = report["ragas"]["llm_judged"]
    if llm["status"] == "ok":
        stopped = llm.get("stopped_at_budget_minutes")
        budget = (
            f", stopped by the {stopped:g}-minute budget (evaluation.ragas_llm_minutes)" if stopped else ""
        )
        lines.append(
            f"- LLM-judged by {llm['judge']} on {llm['queries']} queries (top {llm['top_k']}{budget}):"
        )
        for side in ("base", "finetuned"):
            values = ", ".join(
                f"{m} {llm[side][m]:.3f}" if llm[side][m] is not None else f"{m} n/a" for m in llm["metrics"]
            )
            lines.append(f"  - {side}: {values}")
    else:
        lines.append(f"- LLM-judged ({', '.join(llm['metrics'])}): {llm['status']} ({llm['reason']})")
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], json_path: str | Path, md_path: str | Path, png_path: str | Path
) -> None:
    plot_report(report, png_path)
    write(report, json_path, md_path, markdown_report(report, Path(png_path).name))
