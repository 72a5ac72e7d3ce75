"""The workflow's own targets with the shipped defaults, on the demo and on BEIR SciFact.

For each corpus, one fresh Snakemake run of ``reports/<corpus>-embeddings.json`` (and, with
``--reranker``, ``reports/<corpus>-reranker.json``) in its own working directory, with
``config/config.yaml`` as shipped; SciFact adds only its corpus entry (``source: beir``) and its
300 human test claims as the report's natural questions. Printed side by side: wall time and peak
memory per stage (from the rules' ``benchmark:`` files), then base vs fine-tuned NDCG@10 with its
95% CI for every test set, dense and in ragd's hybrid search, as the report computed it. Last, our
corpus encoding against a bare ``SentenceTransformer.encode`` of the same texts.

``demo-ollama`` is the demo once more with ``generate.query_generator: ollama``: queries and the
LLM judge come from a real instruction model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, on the CPU via
``xllamacpp``) behind the Ollama-protocol server on 127.0.0.1 (``bench/gguf_llm.py``), reached
through the real ``ollama`` client as a user's Ollama would be.

    python bench/bench_workflow.py                       # demo + SciFact (about 35 min on 2 cores)
    python bench/bench_workflow.py --corpora demo        # about 3 min
    python bench/bench_workflow.py --corpora demo demo-ollama   # no-LLM vs LLM queries, ~20 min
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import DEFAULT_DATA, REPO

STAGES = (
    "sync_snapshot",
    "generate_queries",
    "build_training_data",
    "train_embeddings",
    "evaluate_embeddings",
    "train_reranker",
    "evaluate_reranker",
)


def scifact_questions(scifact: Path, split: str, out: Path) -> Path:
    """SciFact's human claims of ``split`` with the abstracts that answer them, as questions JSONL."""
    claims = {}
    for line in (scifact / "queries.jsonl").read_text().splitlines():
        if line.strip():
            q = json.loads(line)
            claims[str(q["_id"])] = q["text"]
    docs: dict[str, list[str]] = {}
    with open(scifact / "qrels" / f"{split}.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if int(row["score"]) > 0:
                docs.setdefault(row["query-id"], []).append(row["corpus-id"])
    with open(out, "w") as handle:
        for qid, answer in docs.items():
            rec = {"query_id": qid, "query": claims[qid], "documents": answer}
            handle.write(json.dumps(rec) + "\n")
    return out


def scifact_chat_history(scifact: Path, folder: Path, n: int, seed: int = 0) -> dict:
    """``n`` of SciFact's *train* claims as ragd chat sessions, written by ragd's own
    ``ChatHistory``/``save_history``: each claim a user message, each answer citing the 3 abstracts
    the base model ranks first (what ragd's search would have shown; the claims' qrels are never
    written, so nothing but the question reaches training)."""
    import random

    import numpy as np
    from ragd.chat.history import ChatHistory, save_history
    from ragd.citation import Citation

    from ragd_train.encoding import CachedEncoder

    claims = [json.loads(x) for x in (scifact / "queries.jsonl").read_text().splitlines() if x.strip()]
    with open(scifact / "qrels" / "train.tsv", newline="") as handle:
        train_ids = sorted({row["query-id"] for row in csv.DictReader(handle, delimiter="\t")})
    by_id = {str(c["_id"]): c["text"] for c in claims}
    chosen = random.Random(seed).sample(train_ids, n)
    docs = [json.loads(x) for x in (scifact / "corpus.jsonl").read_text().splitlines() if x.strip()]
    encoder = CachedEncoder("sentence-transformers/all-MiniLM-L6-v2", None)
    texts = [f"{d.get('title', '')}\n\n{d['text']}".strip() for d in docs]
    corpus_emb = encoder.encode(texts)
    query_emb = encoder.encode([by_id[q] for q in chosen])
    top = np.argsort(-(query_emb @ corpus_emb.T), axis=1)[:, :3]
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(0, n, 10):  # ten questions a session
        history = ChatHistory(session_id=f"bench-{s // 10:02d}")
        for q, row in zip(chosen[s : s + 10], top[s : s + 10], strict=True):
            history.add_user_message(by_id[q])
            cites = [
                Citation(
                    document_id=str(docs[i]["_id"]),
                    filename=f"{docs[i]['_id']}.txt",
                    content_preview=texts[i][:200],
                )
                for i in row
            ]
            history.add_assistant_message("According to your documents [1].", citations=cites)
        save_history(history, folder / f"bench-{s // 10:02d}.json")
    return {"claims": chosen, "folder": str(folder)}


def run_workflow(
    corpus: str, workdir: Path, extra: dict | None, reranker: bool, env: dict | None = None
) -> dict:
    for suffix in ("-ollama", "-chat", "-noragd", "-harmed"):
        corpus = corpus.removesuffix(suffix)
    targets = [f"reports/{corpus}-embeddings.json"] + (
        [f"reports/{corpus}-reranker.json"] if reranker else []
    )
    cmd = [
        str(Path(sys.executable).parent / "snakemake"),
        *targets,
        "--cores",
        "2",
        "--directory",
        str(workdir),
    ]
    if extra:
        extra_path = workdir / "bench-config.yaml"
        extra_path.write_text(yaml.safe_dump(extra))
        cmd += ["--configfile", str(REPO / "config" / "config.yaml"), str(extra_path)]
    print("$", " ".join(cmd), flush=True)
    t = time.monotonic()
    # --keep-going: a failed reranker still leaves the embeddings' numbers to print
    done = subprocess.run(
        [*cmd, "--keep-going"],
        cwd=REPO,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    wall = time.monotonic() - t
    stages = {}
    for stage in STAGES:
        tsv = workdir / "benchmarks" / stage / f"{corpus}.tsv"
        if tsv.exists():
            row = next(csv.DictReader(tsv.open(), delimiter="\t"))
            stages[stage] = {"s": float(row["s"]), "max_rss_mib": float(row["max_rss"])}
    reports = {
        kind: json.loads((workdir / "reports" / f"{corpus}-{kind}.json").read_text())
        for kind in ("embeddings", "reranker")
        if (workdir / "reports" / f"{corpus}-{kind}.json").exists()
    }
    plan = json.loads((workdir / "models" / f"{corpus}-embeddings" / "training_metadata.json").read_text())
    stats = json.loads((workdir / "training_data" / corpus / "stats.json").read_text())
    return {
        "training_data": stats,
        "returncode": done.returncode,
        "wall_s": wall,
        "stages": stages,
        "reports": reports,
        "training_plan": plan.get("training_plan"),
        "interpolation": plan.get("interpolation"),
        "precision": plan.get("precision"),
    }


def encoding_check(snapshot: Path, limit: int, repeats: int) -> dict:
    """Our corpus encoding (the miner's encoder, no cache) vs a bare SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer

    from ragd_train.encoding import CachedEncoder
    from ragd_train.hub import resolve_model
    from ragd_train.snapshot import load_snapshot

    texts = [c["text"] for c in load_snapshot(snapshot)][:limit]
    name = "sentence-transformers/all-MiniLM-L6-v2"
    bare = SentenceTransformer(resolve_model(name), trust_remote_code=False)
    ours = CachedEncoder(name, None)
    ours.model  # noqa: B018 (load before timing, as the bare model is)
    times: dict[str, list[float]] = {"bare": [], "ours": []}
    for r in range(repeats):
        for side in ("bare", "ours") if r % 2 == 0 else ("ours", "bare"):
            t = time.perf_counter()
            if side == "bare":
                bare.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
            else:
                ours.encode(texts)
            times[side].append(time.perf_counter() - t)
    best = {side: min(v) for side, v in times.items()}
    return {"texts": len(texts), "times_s": times, "speed_ratio": best["bare"] / best["ours"]}


def print_summary(results: dict) -> None:
    print("\n== Wall time and peak memory per stage (Snakemake benchmark files) ==")
    names = list(results)
    print(f"{'stage':<22}" + "".join(f"{n + ' s':>14}{n + ' MiB':>14}" for n in names))
    for stage in STAGES:
        if not any(stage in results[n]["stages"] for n in names):
            continue
        cells = ""
        for n in names:
            st = results[n]["stages"].get(stage)
            cells += f"{st['s']:>14.1f}{st['max_rss_mib']:>14.0f}" if st else f"{'-':>14}{'-':>14}"
        print(f"{stage:<22}{cells}")
    print(f"{'whole run (wall)':<22}" + "".join(f"{results[n]['wall_s']:>14.1f}{'':>14}" for n in names))
    for n in names:
        plan = results[n]["training_plan"] or {}
        print(
            f"{n}: training plan {plan.get('steps')} of {plan.get('full_steps')} steps "
            f"({plan.get('limited_by')}, from the clock: {plan.get('from_clock')}, "
            f"{plan.get('step_time_s')} s/step, {results[n].get('precision')})"
        )
        interp = results[n].get("interpolation") or {}
        curve = ", ".join(f"{p['weight']:g}: {p['ndcg@10']:.4f}" for p in interp.get("curve") or [])
        print(f"{n}: shipped weight {interp.get('weight')} ({interp.get('reason')}); dev NDCG@10 {curve}")
    print("\n== Base vs fine-tuned embeddings, NDCG@10 (95% CI of the change) ==")
    print(
        f"{'corpus':<9}{'test set':<12}{'search':<8}{'queries':>8}{'base':>9}{'tuned':>9}{'delta':>9}  95% CI"
    )
    for n in names:
        rep = results[n]["reports"]["embeddings"]
        for r in rep["retrieval"]:
            m = r["metrics"]["ndcg@10"]
            room = "ceiling" if r.get("ceiling") else f"base MRR@10 {r.get('base_mrr@10', 0):.3f}"
            print(
                f"{n:<9}{r['test_set']:<12}{r['mode']:<8}{r['queries']:>8}{m['base']:>9.4f}"
                f"{m['finetuned']:>9.4f}{m['delta']:>+9.4f}  "
                f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]  {room}"
            )
        print(f"{n:<9}gate: {rep['gate']['verdict']} {rep['gate'].get('reasons') or ''}")
    for n in names:
        rr = results[n]["reports"].get("reranker")
        if rr:
            print(f"\n== {n}: rerankers over the embedding models' top {rr['candidates']} ==")
            for c in rr["combinations"]:
                m = c["metrics"]["ndcg@10"]
                print(
                    f"{c['retriever']:<10}{c['reranker']:<12}NDCG@10 {m['mean']:.4f} "
                    f"(vs retriever alone {m['delta']:+.4f} "
                    f"[{m['delta_ci_low']:+.4f}, {m['delta_ci_high']:+.4f}])"
                )
    for n in names:
        data = results[n]["training_data"]
        gen, kept = data.get("generation", {}), data.get("filtering", {})
        llm = results[n].get("llm")
        print(
            f"\n{n}: training data by {gen.get('generator')}: {kept.get('kept')} of {kept.get('queries')} "
            f"queries kept ({kept.get('method')}), train/test {data.get('split', {}).get('train')}/"
            f"{data.get('split', {}).get('test')}"
            + (
                f"; {llm['model']}: {llm['calls']} calls, {llm['model_seconds']} s in the model"
                if llm
                else ""
            )
        )
    for n in names:
        enc = results[n].get("encoding")
        if enc:
            print(
                f"\n{n}: encoding {enc['texts']} chunks, ours vs bare SentenceTransformer.encode: "
                f"speed ratio {enc['speed_ratio']:.3f} (best of {len(enc['times_s']['ours'])}; "
                f"ours {min(enc['times_s']['ours']):.1f} s, bare {min(enc['times_s']['bare']):.1f} s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpora",
        nargs="+",
        default=["demo", "scifact"],
        choices=["demo", "demo-noragd", "demo-harmed", "scifact", "scifact-chat", "demo-ollama"],
    )
    parser.add_argument("--chat-claims", type=int, default=100, help="train claims as chat history")
    parser.add_argument("--scifact", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "workflow")
    parser.add_argument("--reranker", action="store_true", help="also build and report the reranker")
    parser.add_argument("--keep", action="store_true", help="reuse existing working directories")
    parser.add_argument(
        "--encode-texts", type=int, default=1000, help="chunks for the encoding check (0: skip)"
    )
    parser.add_argument("--encode-repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    results = {}
    for corpus in args.corpora:
        workdir = args.out / corpus
        if workdir.exists() and not args.keep:
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        extra = None
        env = None
        if corpus == "demo-noragd":  # the README's bare install: ragd does not import
            hide = workdir / "hide-ragd" / "ragd"
            hide.mkdir(parents=True, exist_ok=True)
            (hide / "__init__.py").write_text("raise ImportError('ragd hidden by bench_workflow')\n")
            env = {"PYTHONPATH": str(hide.parent)}
        if corpus == "demo-harmed":  # a recipe that wrecks the model: lr 1e-3, three epochs
            extra = {"embeddings": {"learning_rate": 1e-3, "epochs": 3}}
        if corpus in ("scifact", "scifact-chat"):
            questions = scifact_questions(
                args.scifact.resolve(), "test", workdir / "scifact-test-claims.jsonl"
            )
            extra = {
                "corpora": {
                    "scifact": {
                        "source": "beir",
                        "path": str(args.scifact.resolve()),
                        "questions": str(questions),
                    }
                }
            }
            if corpus == "scifact-chat":
                chat = scifact_chat_history(
                    args.scifact.resolve(), workdir / "chat_history", args.chat_claims
                )
                extra["corpora"]["scifact"]["chat_history"] = chat["folder"]
        if corpus == "demo-ollama":
            from gguf_llm import QWEN_NAME, gguf_ollama_server

            with gguf_ollama_server() as srv:
                extra = {
                    "generate": {"query_generator": "ollama"},
                    "ollama": {"host": srv.url, "model": QWEN_NAME},
                    # RAGAS's LLM metrics with this model on 2 CPU threads: 1 of 20 queries in
                    # 7 minutes (long prompts of 10 chunks); the IR metrics need no LLM
                    "evaluation": {"ragas_llm_queries": 0},
                }
                results[corpus] = run_workflow(corpus, workdir, extra, args.reranker)
                results[corpus]["llm"] = {
                    "model": QWEN_NAME,
                    "calls": dict(srv.calls),
                    "model_seconds": round(srv.gguf.seconds, 1),
                }
        else:
            results[corpus] = run_workflow(corpus, workdir, extra, args.reranker, env)
        base_name = corpus.split("-")[0]
        if args.encode_texts and corpus in ("demo", "scifact"):
            results[corpus]["encoding"] = encoding_check(
                workdir / "snapshots" / f"{base_name}.jsonl", args.encode_texts, args.encode_repeats
            )
        (args.out / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    print_summary(results)
    print(f"\nload average at the end: {os.getloadavg()}; summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
