"""A/B evaluation of a fine-tuned embedding model against its base on held-out queries.

IR metrics per query (full and Matryoshka dims), paired bootstrap CIs and a sign-flip test on
the difference, RAGAS ID-based context precision/recall, a promotion gate, JSON/Markdown/PNG.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import atomic_open, read_records, write_json
from ragd_train.snapshot import load_snapshot
from ragd_train.stats import paired_bootstrap, sign_flip_test

log = logging.getLogger("ragd_train")
KS = {"ndcg": [10], "mrr": [10], "recall": [1, 10, 100]}
HEADLINE = "ndcg@10"
RAGAS_TOP_K = 10


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
    corpus: dict[str, str] = {}
    for record in read_records(test_path, required=("positive_id", "positive")):
        corpus.setdefault(str(record["positive_id"]), str(record["positive"]))
        for neg in record.get("negatives") or []:
            if isinstance(neg, dict) and "id" in neg and "text" in neg:
                corpus.setdefault(str(neg["id"]), str(neg["text"]))
    return [{"chunk_id": cid, "text": text} for cid, text in corpus.items()]


def model_dims(model_dir: str | Path, full: int) -> list[int]:
    """The model's Matryoshka dims from its metadata (full dim first), else just the full dim."""
    meta_path = Path(model_dir) / "training_metadata.json"
    dims = json.loads(meta_path.read_text()).get("matryoshka_dims") if meta_path.exists() else None
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


def connect_judge(config: dict[str, Any]) -> tuple[Any | None, str]:
    """The Ollama client that judges (``evaluation.llm_judge``), or None and why not."""
    from ragd_train.generate import connect_llm

    if not config["evaluation"].get("llm_judge", True):
        return None, "evaluation.llm_judge is off"
    llm = connect_llm(config)
    if llm is None:
        o = config["ollama"]
        return None, f"no LLM reachable at {o['host']} (model {o['model']})"
    return llm, ""


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
) -> dict[str, Any]:
    from ragd_train.ragas_llm import LLM_METRICS

    skipped = {"status": "skipped", "metrics": list(LLM_METRICS)}
    if llm is None or max_queries == 0:
        return {**skipped, "reason": note if llm is None else "evaluation.ragas_llm_queries is 0"}
    try:
        import ragas  # noqa: F401
    except ImportError as exc:
        return {**skipped, "reason": f"ragas is not installed (pip install 'ragd-train[eval]'): {exc}"}
    from ragd_train.mining import load_encoder
    from ragd_train.ragas_llm import ragas_llm_metrics

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
    )


def _rank(
    query_emb: np.ndarray, corpus_emb: np.ndarray, doc_ids: list[str], dim: int, k: int
) -> list[list[str]]:
    from ragd_train.ir_metrics import normalize, retrieve

    idx, _ = retrieve(normalize(query_emb, dim), normalize(corpus_emb, dim), k)
    return [[doc_ids[i] for i in row] for row in idx]


def evaluate_models(
    model_dir: str | Path,
    base_model: str,
    test_path: str | Path,
    snapshot_path: str | Path | None,
    *,
    require_improvement: float = 0.0,
    bootstrap_samples: int = 10_000,
    seed: int = 42,
    llm: Any = None,
    llm_note: str = "no LLM reachable",
    ragas_llm_queries: int = 20,
    cache_dir: str | Path = "cache",
) -> dict[str, Any]:
    """Compare ``model_dir`` with ``base_model`` on the test queries against the whole snapshot.

    With ``llm`` (an ``OllamaLLM``), RAGAS's LLM-judged metrics run on the first
    ``ragas_llm_queries`` queries; otherwise they are reported as skipped with ``llm_note``.
    """
    from ragd_train.ir_metrics import METRICS
    from ragd_train.mining import encode, load_encoder

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
    qids = list(queries)
    qrels = [qrels_map[q] for q in qids]
    max_k = max(k for cut in KS.values() for k in cut)
    sides: dict[str, dict[str, Any]] = {}
    for side, name in (("base", base_model), ("finetuned", str(model_dir))):
        t = time.monotonic()
        model = load_encoder(name)
        corpus_emb = encode(model, [c["text"] for c in chunks])
        query_emb = encode(model, [queries[q] for q in qids])
        full = int(corpus_emb.shape[1])
        sides[side] = {
            "model": name,
            "dim": full,
            "corpus_emb": corpus_emb,
            "query_emb": query_emb,
            "encode_s": time.monotonic() - t,
        }
    dims = model_dims(model_dir, sides["finetuned"]["dim"])
    per_dim: dict[str, Any] = {}
    per_query_full: dict[str, dict[str, np.ndarray]] = {}
    ranked_full: dict[str, list[list[str]]] = {}
    for dim in dims:
        entry: dict[str, Any] = {}
        values: dict[str, dict[str, np.ndarray]] = {}
        for side in ("base", "finetuned"):
            s = sides[side]
            # A base with fewer dimensions is compared at its own full dimension.
            ranked = _rank(s["query_emb"], s["corpus_emb"], doc_ids, min(dim, s["dim"]), max_k)
            values[side] = {f"{m}@{k}": METRICS[m](ranked, qrels, k) for m, cut in KS.items() for k in cut}
            if dim == dims[0]:
                ranked_full[side], per_query_full[side] = ranked, values[side]
        for metric in values.get("finetuned", {}):
            row: dict[str, Any] = {side: float(values[side][metric].mean()) for side in values}
            if "base" in values:
                row.update(
                    paired_bootstrap(
                        values["base"][metric],
                        values["finetuned"][metric],
                        samples=bootstrap_samples,
                        seed=seed,
                    )
                )
                row["p_value"] = sign_flip_test(
                    values["base"][metric], values["finetuned"][metric], samples=bootstrap_samples, seed=seed
                )
            entry[metric] = row
        per_dim[str(dim)] = entry
    full_dim = str(dims[0])
    head = per_dim[full_dim][HEADLINE]
    delta = head.get("delta", 0.0)
    passed = delta > 0 and delta >= require_improvement  # a tie is not an improvement
    ragas = {side: _ragas_id_metrics(ranked_full[side], qrels) for side in ranked_full}
    ragas["llm_judged"] = _ragas_llm(
        llm,
        llm_note,
        base_model,
        [queries[q] for q in qids],
        ranked_full,
        chunks,
        ragas_llm_queries,
        cache_dir,
        seed,
    )
    verdict = "promoted" if passed else "rejected"
    report = {
        "model": str(model_dir),
        "base_model": base_model,
        "test_data": str(test_path),
        "snapshot": str(snapshot_path) if snapshot_path else "positives and negatives of the test data",
        "queries": len(qids),
        "corpus_size": len(doc_ids),
        "dims": dims,
        "base_dim": sides["base"]["dim"],
        "metrics": per_dim,
        "headline": {
            "metric": HEADLINE,
            "dim": dims[0],
            "base": head.get("base"),
            "finetuned": head["finetuned"],
            "delta": head.get("delta"),
            "ci_low": head.get("ci_low"),
            "ci_high": head.get("ci_high"),
            "p_value": head.get("p_value"),
        },
        "gate": {"require_improvement": require_improvement, "verdict": verdict},
        "ragas": ragas,
        "timings_s": {f"encode_{side}": round(sides[side]["encode_s"], 2) for side in sides}
        | {"total": round(time.monotonic() - start, 2)},
    }
    return report


def gate_message(report: dict[str, Any]) -> str:
    """One plain sentence on whether the model beat its base."""
    h, gate = report["headline"], report["gate"]
    numbers = (
        f"NDCG@10 {h['base']:.4f} -> {h['finetuned']:.4f} (delta {h['delta']:+.4f}, 95% CI "
        f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], p={h['p_value']:.3g})"
    )
    if gate["verdict"] == "promoted":
        return f"The fine-tuned model is better than its base: {numbers}."
    return (
        "The fine-tuned model is NOT better than its base "
        f"(required gain {gate['require_improvement']:+.4f}): "
        f"{numbers}. Keep using the base model."
    )


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Bars per metric (base vs fine-tuned, with the CI of the difference) and NDCG@10 against dimension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = str(report["dims"][0])
    metrics = list(report["metrics"][full])
    base = [report["metrics"][full][m].get("base", np.nan) for m in metrics]
    tuned = [report["metrics"][full][m]["finetuned"] for m in metrics]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    x = np.arange(len(metrics))
    left.bar(x - 0.2, base, 0.4, label="base", color="#9aa5b1")
    left.bar(x + 0.2, tuned, 0.4, label="fine-tuned", color="#2f7ed8")
    for i, m in enumerate(metrics):
        row = report["metrics"][full][m]
        if "delta" in row:
            left.annotate(
                f"{row['delta']:+.3f}", (x[i] + 0.2, tuned[i]), ha="center", va="bottom", fontsize=8
            )
    left.set_xticks(x, metrics)
    left.set_ylim(0, 1.05)
    left.set_title(f"{Path(report['model']).name} vs base (dim {full})")
    left.legend(loc="lower right")
    dims = [int(d) for d in report["metrics"]]
    for side, color in (("base", "#9aa5b1"), ("finetuned", "#2f7ed8")):
        ys = [report["metrics"][str(d)][HEADLINE].get(side, np.nan) for d in dims]
        right.plot(dims, ys, marker="o", color=color, label=side)
    right.set_xscale("log", base=2)
    right.set_xticks(dims, [str(d) for d in dims])
    right.set_xlabel("embedding dimension (Matryoshka)")
    right.set_ylabel("NDCG@10")
    right.set_title("NDCG@10 by dimension")
    right.legend()
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
    for dim, metrics in report["metrics"].items():
        lines += [
            f"## Dimension {dim}",
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
        lines.append(f"- LLM-judged by {llm['judge']} on {llm['queries']} queries (top {llm['top_k']}):")
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
    with atomic_open(md_path) as handle:
        handle.write(markdown_report(report, Path(png_path).name))
    write_json(json_path, report)
