"""Benchmark: does fine-tuning all-MiniLM-L6-v2 with our training data beat the base model on SciFact?

One run, on BEIR SciFact (read in place from ``../shared/data/scifact``, CC BY-NC, never copied)
and the offline ``sentence-transformers/all-MiniLM-L6-v2``, measures base and fine-tuned models
side by side on the 300 human test claims (NDCG@10, Recall@10/100, MRR@10 at the full dim and at
Matryoshka dims), for two scenarios:

a. corpus only: queries generated from the corpus alone by the no-LLM generator (strategies
   ``--strategies``), filtered by round-trip consistency and mined with ``ragd_train.generate.mining.mine``
   against the cached base embeddings, trained with ``ragd_train.embeddings.train.train_embeddings``;
   ``--objective distill`` (default, what the workflow does) adds ``ragd_train.generate.teacher`` pairs
   labelled by the BM25 + dense teacher, so ``loss: auto`` distils them with MarginMSE;
   ``--objective distill_kl`` gives each query a scored list of the teacher's candidates (its
   top ``--teacher-list-head`` and a draw from the rest of its top 50, ``--teacher-list-size`` in
   all) for the listwise KL loss; ``--objective contrastive`` trains MNRL on (query, source) instead;
b. with the human training claims (``qrels/train.tsv``): (claim, relevant abstract) pairs, hard
   negatives mined by ``mine()`` (other relevant abstracts of the claim are never negatives).

Training runs in a fresh subprocess, so ``peak_memory_mb`` is the training's own. It also times
our training step next to a bare sentence-transformers script (``SentenceTransformerTrainer``,
same loss, data, hyper-parameters and batch size) for ``--step-compare`` steps each.

The corpus is encoded once per model at max_seq_length 256 (the model's default); the base
model's corpus embeddings are cached in ``bench/out/cache`` (same key as bench_generation.py).
``--eval-docs N`` evaluates on a subset (every relevant test abstract plus a random fill to N)
for quick iteration: its numbers are a proxy, not the benchmark.

Each fine-tuned model is compared with the base on the same queries by
``ragd_train.stats.paired_bootstrap`` (95% CI of the per-query difference) and
``ragd_train.stats.sign_flip_test`` (p-value), the promotion report's statistics.
``--save-model DIR`` keeps the trained model (one scenario: ``DIR``; ``ab``: ``DIR-a`` and ``DIR-b``)
and, on the full corpus, writes its corpus embeddings to the cache under the key bench_reranker.py
and bench_gate.py look up, so they do not encode the corpus again.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    ENCODE_BATCH,
    METRIC_KEYS,
    MODEL,
    cached_encode,
    claim_ids,
    evaluate_model,
    load_model,
    load_scifact,
    log,
    offline,
    plain_args,
    relevant_pairs,
    retrieval,
    summarise,
    versus_base,
    without_relevant,
)

offline()

PUBLISHED_BASE = 0.6451
GOALS = {"a": 0.670, "b": 0.680}


# ------------------------------------------------------------------------------ data


def eval_subset(
    d: dict[str, Any], base_full: np.ndarray, base_q: np.ndarray, test_ids: list[str], n: int, seed: int
) -> list[int]:
    """Corpus indices for the proxy evaluation: every relevant test doc plus a seeded random fill.

    Not the base model's top hits: they would keep the base's ranking intact by construction
    and bias the comparison.
    """
    pos = {doc: i for i, doc in enumerate(d["doc_ids"])}
    keep = {pos[doc] for q in test_ids for doc in d["qrels"]["test"][q] if doc in pos}
    rest = sorted(set(range(len(pos))) - keep)
    random.Random(seed).shuffle(rest)
    keep |= set(rest[: max(0, n - len(keep))])
    return sorted(keep)


# ------------------------------------------------------------------------- training data


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    from ragd_train.jsonl_io import write_jsonl

    write_jsonl(path, records)


def local_llm_queries(args: argparse.Namespace, chunks: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Queries written by the in-process instruction model, for chunks in a seeded random order
    until ``--local-queries`` exist; answers are cached in ``bench/out/cache/generation``."""
    from tqdm import tqdm

    from ragd_train.config import load_config
    from ragd_train.generate.queries import make_generator

    generate = {"query_generator": "local", "local_model": args.local_model}
    config = load_config(overrides={"seed": args.seed, "generate": generate})
    gen = make_generator(chunks, config, args.cache / "generation")
    gen.llm.threads = os.cpu_count()  # the workflow's 1 thread is for parallel jobs; nothing else runs here
    order = list(range(len(chunks)))
    random.Random(args.seed).shuffle(order)
    generated: list[tuple[int, Any]] = []
    with tqdm(total=args.local_queries, desc=f"queries by {args.local_model}", unit="q") as bar:
        for i in order:
            if len(generated) >= args.local_queries:
                break
            queries = gen.generate(chunks[i], args.local_per_chunk)
            generated.extend((i, q) for q in queries)
            bar.update(len(queries))
    log(f"local LLM: {len(generated)} queries, {gen.failures} chunks without a usable answer")
    return generated[: args.local_queries]


def corpus_only_data(
    args: argparse.Namespace, d: dict[str, Any], model: Any, base_full: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scenario a: no-LLM queries from the corpus, round-trip filter, optional mined negatives."""
    from ragd_train.bm25 import BM25
    from ragd_train.encoding import encode
    from ragd_train.generate.mining import mine
    from ragd_train.generate.nollm import NoLLMGenerator

    chunks = d["chunks"]
    strategies = args.strategies.split(",")
    t = time.perf_counter()
    if args.generator == "local":
        generated = local_llm_queries(args, chunks)
    else:
        gen = NoLLMGenerator(chunks, strategies, seed=args.seed)
        generated = []
        for i, chunk in enumerate(chunks):
            for q in gen.generate(chunk, len(strategies)):
                generated.append((i, q))
        rng = random.Random(args.seed)
        rng.shuffle(generated)
        # keep a margin for the filter, then cap at --pairs
        generated = generated[: int(args.pairs * 1.6)]
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    q_texts = [q["query"] for _, q in generated]
    q_emb = encode(model, q_texts, ENCODE_BATCH)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    bm25 = BM25(d["texts"]) if args.hard_negatives and args.bm25_weight > 0 else None
    mined = mine(
        q_emb,
        base_full,
        q_texts,
        bm25,
        [i for i, _ in generated],
        d["doc_ids"],
        num_negatives=args.hard_negatives,
        bm25_weight=args.bm25_weight,
        relative_margin=args.relative_margin,
    )
    mine_s = time.perf_counter() - t
    records = []
    by_strategy: dict[str, int] = {}
    for row, ((i, q), res) in enumerate(zip(generated, mined, strict=True)):
        if args.roundtrip_k and res.positive_rank >= args.roundtrip_k:
            continue
        if len(records) >= args.pairs:
            break
        by_strategy[q["strategy"]] = by_strategy.get(q["strategy"], 0) + 1
        records.append(
            {
                "query": q["query"],
                "positive": q.get("positive", chunks[i]["text"]),
                "negatives": [{"text": chunks[j]["text"]} for j in res.negatives],
                "source_document": chunks[i]["document_id"],
                "_row": row,
            }
        )
    teacher_s = None
    if args.objective in ("distill", "distill_kl"):
        from ragd_train.generate.teacher import teacher_pairs

        t = time.perf_counter()
        kept = [r["_row"] for r in records]
        teacher_in = (
            q_emb[kept],
            base_full,
            [q_texts[j] for j in kept],
            bm25 or BM25(d["texts"]),
            [generated[j][0] for j in kept],
            d["doc_ids"],
        )
        common = {"candidates": 50, "bm25_share": args.teacher_share, "seed": args.seed}
        if args.objective == "distill_kl":
            lists = teacher_lists(
                *teacher_in, size=args.teacher_list_size, head=args.teacher_list_head, **common
            )
            records = [
                {
                    **record,
                    "teacher_list": {
                        "candidates": [
                            {"text": d["texts"][i], "score": score}
                            for i, score in zip(item.indices, item.scores, strict=True)
                        ]
                    },
                }
                for record, item in zip(records, lists, strict=True)
                if item is not None
            ]
        else:
            pairs = teacher_pairs(*teacher_in, first_top=args.teacher_first_top, **common)
            for record, pair in zip(records, pairs, strict=True):
                if pair is not None:
                    record["teacher_pair"] = {
                        "first": {"text": d["texts"][pair.first]},
                        "second": {"text": d["texts"][pair.second]},
                        "margin": pair.margin,
                    }
        teacher_s = round(time.perf_counter() - t, 2)
    for record in records:
        record.pop("_row")
    info = {
        "objective": args.objective,
        "teacher_s": teacher_s,
        "generator": args.generator,
        "strategies": strategies if args.generator == "nollm" else [],
        "generated": len(generated),
        "kept": len(records),
        "by_strategy": by_strategy,
        "generate_s": round(gen_s, 2),
        "encode_queries_s": round(encode_s, 2),
        "mine_filter_s": round(mine_s, 2),
    }
    return records, info


def human_data(
    args: argparse.Namespace, d: dict[str, Any], model: Any, base_full: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Scenario b: (train claim, relevant abstract) pairs with negatives mined by ``mine()``."""
    from ragd_train.bm25 import BM25
    from ragd_train.encoding import encode
    from ragd_train.generate.mining import mine

    pairs = relevant_pairs(d, "train", claim_ids(d, "train"))
    t = time.perf_counter()
    q_texts = [d["queries"][q] for q, _ in pairs]
    q_emb = encode(model, q_texts, ENCODE_BATCH)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    want = args.b_hard_negatives
    bm25 = BM25(d["texts"]) if want and args.bm25_weight > 0 else None
    mined = mine(
        q_emb,
        base_full,
        q_texts,
        bm25,
        [i for _, i in pairs],
        d["doc_ids"],
        num_negatives=want + 3,  # room to drop the claim's other relevant abstracts
        bm25_weight=args.bm25_weight,
        relative_margin=args.relative_margin,
    )
    mine_s = time.perf_counter() - t
    records = []
    negatives = without_relevant(d, "train", pairs, mined, want)
    for (q, i), negs in zip(pairs, negatives, strict=True):
        records.append(
            {
                "query": d["queries"][q],
                "positive": d["texts"][i],
                "negatives": [{"text": d["texts"][j]} for j in negs],
                "source_document": d["doc_ids"][i],
            }
        )
    random.Random(args.seed).shuffle(records)
    return records, {
        "pairs": len(records),
        "encode_queries_s": round(encode_s, 2),
        "mine_s": round(mine_s, 2),
    }


# ------------------------------------------------------------------------------ training


def _train_worker(train_path: str, out_dir: str, cfg: dict[str, Any], queue: Any) -> None:
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    from ragd_train.embeddings.train import EmbeddingTrainingConfig, train_embeddings

    try:
        meta = train_embeddings(train_path, out_dir, EmbeddingTrainingConfig(**cfg), device="cpu")
        queue.put({"ok": True, "meta": meta})
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put({"ok": False, "error": repr(exc)})


def train_in_subprocess(train_path: Path, out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """``train_embeddings`` in a fresh process, so its peak memory is the training's own."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t = time.perf_counter()
    proc = ctx.Process(target=_train_worker, args=(str(train_path), str(out_dir), cfg, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if not result["ok"]:
        raise RuntimeError(f"training failed: {result['error']}")
    meta = result["meta"]
    return {
        "train_s": meta["train_time_s"],
        "wall_s": round(time.perf_counter() - t, 2),
        "peak_memory_mb": meta["peak_memory_mb"],
        "examples": meta["training_examples"],
        "steps": len(meta["loss_history"]),
        "final_loss": meta["loss_history"][-1]["loss"] if meta["loss_history"] else None,
        "matryoshka_dims": meta["matryoshka_dims"],
        "config": cfg,
    }


def _step_worker(kind: str, train_path: str, cfg: dict[str, Any], queue: Any) -> None:
    """Time ``trainer.train()`` for the rows in ``train_path`` (ours or bare sentence-transformers)."""
    from ragd_train.embeddings.train import (
        DISTILL_LOSSES,
        EmbeddingTrainingConfig,
        build_loss,
        loss_name,
        matryoshka_dims,
        memory_bounded_batch,
        teacher_kind,
        train_embeddings,
    )

    c = EmbeddingTrainingConfig(**cfg)
    if kind == "ours":
        with tempfile.TemporaryDirectory() as tmp:
            meta = train_embeddings(train_path, Path(tmp) / "m", c, device="cpu")
        queue.put({"train_s": meta["train_time_s"], "steps": len(meta["loss_history"])})
        return
    # The bare script: what a user would write with sentence-transformers alone. It takes from the
    # package only what makes it the same training as ours: how "auto" resolves to a loss
    # (teacher_kind, loss_name), the loss itself (build_loss, with Matryoshka dims as ours resolves
    # them) and the mini-batches (memory_bounded_batch). The rest is deliberately bare: rows read as
    # they are (no validation; no negatives topped up from other records as load_training_examples
    # does) and the trainer's arguments set by hand, not by ragd_train.training.trainer_arguments.
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from ragd_train.hub import resolve_model

    torch.manual_seed(c.seed)
    with open(train_path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    name = loss_name(c.loss, "cpu", teacher_kind(records))  # same resolution of "auto" as ours
    model = SentenceTransformer(resolve_model(c.base_model), device="cpu")
    model.max_seq_length = c.max_seq_length
    rows = []
    for r in records:
        if name == "margin_mse":
            pair = r["teacher_pair"]
            row = {"anchor": r["query"], "first": pair["first"]["text"], "second": pair["second"]["text"]}
            row["label"] = pair["margin"]
        elif name == "distill_kl":
            cands = r["teacher_list"]["candidates"]
            row = {"anchor": r["query"], **{f"candidate_{k + 1}": x["text"] for k, x in enumerate(cands)}}
            row["label"] = [x["score"] for x in cands]
        else:
            row = {"anchor": r["query"], "positive": r["positive"]}
            for k, n in enumerate(r["negatives"][: c.hard_negatives], start=1):
                row[f"negative_{k}"] = n["text"]
        rows.append(row)
    distill = name in DISTILL_LOSSES
    # as train_embeddings: no Matryoshka for distillation under "auto" (--train-matryoshka is auto|none)
    auto_off = distill and c.matryoshka_dims == "auto"
    dims = [] if auto_off else matryoshka_dims(c.matryoshka_dims, model.get_embedding_dimension())
    loss = build_loss(model, c, dims, name)
    # the same mini-batches and accumulation as ours (one update = batch_size examples)
    per_device, accumulation = memory_bounded_batch(
        name, "cpu", c.batch_size, c.mini_batch_size, c.max_seq_length, len(rows[0]) - 1
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=c.epochs,
            per_device_train_batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            learning_rate=c.learning_rate,
            warmup_ratio=c.warmup_ratio,
            batch_sampler=BatchSamplers.BATCH_SAMPLER if distill else BatchSamplers.NO_DUPLICATES,
            seed=c.seed,
            data_seed=c.seed,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), loss=loss
        )
        t = time.monotonic()
        trainer.train()
        queue.put({"train_s": round(time.monotonic() - t, 2), "steps": trainer.state.global_step})


def step_compare(
    records: list[dict[str, Any]], cfg: dict[str, Any], steps: int, repeats: int, work: Path
) -> dict[str, Any]:
    """Ours vs bare sentence-transformers, ``steps`` steps each, alternating, ``repeats`` times."""
    cfg = {**cfg, "epochs": 1}
    path = work / "step_compare.jsonl"
    write_records(path, records[: steps * cfg["batch_size"]])
    ctx = mp.get_context("spawn")
    runs: dict[str, list[float]] = {"ours": [], "st": []}
    for r in range(repeats):
        for kind in ("ours", "st") if r % 2 == 0 else ("st", "ours"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_step_worker, args=(kind, str(path), cfg, queue))
            proc.start()
            out = queue.get()
            proc.join()
            runs[kind].append(out["train_s"] / max(out["steps"], 1))
            log(f"  step time {kind}: {runs[kind][-1]:.2f} s/step ({out['steps']} steps)")
    ours, st = min(runs["ours"]), min(runs["st"])
    return {
        "steps": steps,
        "repeats": repeats,
        "ours_s_per_step": round(ours, 3),
        "st_s_per_step": round(st, 3),
        "runs": runs,
        "ratio": round(ours / st, 4),
        "within_5pct": ours <= 1.05 * st,
    }


# ------------------------------------------------------------------------------- report


def table(results: dict[str, Any], dims: list[int]) -> str:
    lines = []
    head = f"{'model':<22}{'dim':>5}" + "".join(f"{k:>12}" for k in METRIC_KEYS)
    lines.append(head)
    lines.append("-" * len(head))
    for name, res in results["models"].items():
        for dim in dims:
            m = res["metrics"][str(dim)]
            lines.append(f"{name:<22}{dim:>5}" + "".join(f"{m[k]:>12.4f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--cache", type=Path, default=DEFAULT_OUT / "cache", help="base-model embedding cache")
    p.add_argument("--scenario", choices=["a", "b", "ab"], default="ab")
    p.add_argument(
        "--quick", action="store_true", help="proxy eval on 1,000 docs, 320 pairs, 2 compare steps"
    )
    p.add_argument("--eval-docs", type=int, default=0, help="evaluate on a subset of N docs (proxy); 0 = all")
    p.add_argument("--dims", default="384,192,96,48")
    p.add_argument("--seed", type=int, default=42)
    # scenario a
    p.add_argument("--strategies", default="claim,heading", help="no-LLM strategies for scenario a")
    p.add_argument(
        "--generator",
        choices=["nollm", "local"],
        default="nollm",
        help="scenario a queries: the no-LLM strategies, or an instruction model run in-process",
    )
    p.add_argument("--local-model", default="SmolLM2", help="--generator local: model id, alias or path")
    p.add_argument("--local-queries", type=int, default=2200, help="--generator local: queries to write")
    p.add_argument("--local-per-chunk", type=int, default=2, help="--generator local: queries per chunk")
    p.add_argument("--pairs", type=int, default=3000, help="training pairs for scenario a")
    p.add_argument(
        "--roundtrip-k", type=int, default=10, help="keep a query only if base ranks its source < k"
    )
    p.add_argument("--hard-negatives", type=int, default=0, help="mined negatives per pair in scenario a")
    p.add_argument("--relative-margin", type=float, default=0.05)
    p.add_argument("--bm25-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-5, help="scenario a learning rate")
    p.add_argument(
        "--objective",
        choices=["distill", "distill_kl", "contrastive"],
        default="distill",
        help="scenario a: MarginMSE on the BM25+dense teacher's pairs (the workflow's default), "
        "listwise KL on its scored lists, or MNRL",
    )
    p.add_argument("--teacher-list-size", type=int, default=8, help="distill_kl: candidates per query")
    p.add_argument(
        "--teacher-list-head", type=int, default=4, help="distill_kl: of them, the teacher's top N"
    )
    p.add_argument("--teacher-share", type=float, default=0.3, help="BM25's weight in the teacher")
    p.add_argument(
        "--teacher-first-top", type=int, default=0, help="first candidate from the teacher's top N (0: any)"
    )
    p.add_argument(
        "--train-matryoshka", choices=["auto", "none"], default="auto", help="MatryoshkaLoss while training"
    )
    # scenario b
    p.add_argument("--b-hard-negatives", type=int, default=1)
    p.add_argument("--b-lr", type=float, default=2e-5)
    p.add_argument("--b-epochs", type=int, default=3, help="scenario b epochs (the config default)")
    # training, both
    p.add_argument("--epochs", type=int, default=1, help="scenario a epochs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-seq", type=int, default=128, help="max_seq_length while training")
    p.add_argument(
        "--loss", default="auto", choices=["auto", "mnrl", "cached_mnrl", "margin_mse", "distill_kl"]
    )
    p.add_argument("--max-steps", type=int, default=0, help="cap training steps (rows = steps x batch)")
    p.add_argument("--step-compare", type=int, default=3, help="steps per step-time run; 0 skips it")
    p.add_argument("--step-repeats", type=int, default=2)
    p.add_argument("--tag", default="", help="suffix of the results file")
    p.add_argument(
        "--save-model",
        type=Path,
        default=None,
        help="keep the fine-tuned model here (replaced if it exists; ab: DIR-a, DIR-b)",
    )
    p.add_argument("--bootstrap-samples", type=int, default=10_000)
    args = p.parse_args()
    if args.quick:
        args.eval_docs = args.eval_docs or 1000
        args.pairs = min(args.pairs, 320)
        args.step_compare = min(args.step_compare, 2)
    dims = [int(x) for x in args.dims.split(",")]

    import torch

    from ragd_train.hub import resolve_model

    t_all = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "args": plain_args(args),
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
            "load_average_start": list(os.getloadavg()),
        },
        "stages_s": {},
        "models": {},
    }
    stages = results["stages_s"]
    with tempfile.TemporaryDirectory(prefix="bench_embeddings_") as tmp:
        work = Path(tmp)
        log(f"loading SciFact from {args.data}")
        d = load_scifact(args.data, work)
        stages["snapshot_load"] = round(d["load_s"], 2)
        test_ids = [q for q in d["qrels"]["test"] if q in d["queries"]]
        model_path = resolve_model(MODEL)
        base = load_model(model_path)
        log(f"base model: encoding {len(d['texts'])} docs (cached across runs in {args.cache})")
        base_full, enc_s, cached = cached_encode(base, [model_path, ENCODE_BATCH], d["texts"], args.cache)
        stages["base_encode_corpus"] = round(enc_s, 2)
        stages["base_encode_corpus_cached"] = cached
        from ragd_train.encoding import encode

        base_q = encode(base, [d["queries"][q] for q in test_ids], ENCODE_BATCH)
        subset = (
            eval_subset(d, base_full, base_q, test_ids, args.eval_docs, args.seed)
            if args.eval_docs
            else list(range(len(d["texts"])))
        )
        results["eval_docs"] = len(subset)
        full_dim = base_full.shape[1]
        dims = sorted({full_dim, *dims}, reverse=True)
        t = time.perf_counter()
        res = retrieval(d, test_ids, subset, dims, base_q, base_full[subset])
        results["models"]["base"] = summarise(res)
        if args.eval_docs:  # the base model's full-corpus figure costs nothing more: print it too
            everything = list(range(len(d["texts"])))
            full = retrieval(d, test_ids, everything, dims, base_q, base_full)
            results["models"]["base (all docs)"] = {"metrics": {str(k): v for k, v in full.mean().items()}}
        stages["base_eval"] = round(time.perf_counter() - t, 2)
        log(
            f"base NDCG@10 {results['models']['base']['metrics'][str(full_dim)]['ndcg@10']:.4f}"
            f" on {len(subset)} docs"
        )

        train_cfg = {
            "base_model": MODEL,
            "batch_size": args.batch_size,
            "max_seq_length": args.train_seq,
            "loss": args.loss,
            "matryoshka_dims": args.train_matryoshka,
            "seed": args.seed,
        }
        scenarios = {}
        for sc in args.scenario:
            t = time.perf_counter()
            if sc == "a":
                records, info = corpus_only_data(args, d, base, base_full)
                cfg = {
                    **train_cfg,
                    "epochs": args.epochs,
                    "learning_rate": args.lr,
                    "hard_negatives": args.hard_negatives,
                }
            else:
                records, info = human_data(args, d, base, base_full)
                cfg = {
                    **train_cfg,
                    "epochs": args.b_epochs,
                    "learning_rate": args.b_lr,
                    "hard_negatives": args.b_hard_negatives,
                }
            if args.max_steps:
                records = records[: args.max_steps * args.batch_size]
            stages[f"{sc}_data"] = round(time.perf_counter() - t, 2)
            path = work / f"train_{sc}.jsonl"
            write_records(path, records)
            model_dir = work / f"model_{sc}"
            if args.save_model is not None:
                model_dir = args.save_model
                if len(args.scenario) > 1:
                    model_dir = model_dir.with_name(f"{model_dir.name}-{sc}")
                shutil.rmtree(model_dir, ignore_errors=True)
                model_dir.parent.mkdir(parents=True, exist_ok=True)
            log(f"scenario {sc}: {len(records)} training pairs {info}; training into {model_dir} ...")
            train = train_in_subprocess(path, model_dir, cfg)
            stages[f"{sc}_train"] = train["wall_s"]
            log(
                f"scenario {sc}: trained {train['steps']} steps in {train['train_s']} s,"
                f" peak {train['peak_memory_mb']} MiB"
            )
            t = time.perf_counter()
            ft = load_model(str(model_dir))
            keep = args.save_model is not None and not args.eval_docs
            store = resolve_model(str(model_dir)) if keep else None
            ev = evaluate_model(ft, d, test_ids, subset, dims, args.cache, None, store_key=store)
            stages[f"{sc}_eval"] = round(time.perf_counter() - t, 2)
            name = f"fine-tuned ({sc})"
            results["models"][name] = ev
            nd = ev["metrics"][str(full_dim)]["ndcg@10"]
            base_nd = results["models"]["base"]["metrics"][str(full_dim)]["ndcg@10"]
            stats = versus_base(results["models"]["base"], ev, args.bootstrap_samples, args.seed)
            scenarios[sc] = {
                "model_dir": str(model_dir) if args.save_model is not None else None,
                "vs_base": stats,
                "data": info,
                "training": train,
                "ndcg@10": nd,
                "delta_vs_base": round(nd - base_nd, 4),
                "goal": GOALS[sc],
                "goal_met": nd >= GOALS[sc] and not args.eval_docs,
            }
            log(f"scenario {sc}: NDCG@10 {nd:.4f} (base {base_nd:.4f}, {nd - base_nd:+.4f})")
            if sc == args.scenario[0] and args.step_compare:
                log(
                    f"step time: ours vs bare sentence-transformers,"
                    f" {args.step_compare} steps x {args.step_repeats}"
                )
                t = time.perf_counter()
                results["step_compare"] = {
                    **step_compare(records, cfg, args.step_compare, args.step_repeats, work),
                    "config": cfg,
                }
                stages["step_compare"] = round(time.perf_counter() - t, 2)
        results["scenarios"] = scenarios
    stages["total"] = round(time.perf_counter() - t_all, 2)
    results["environment"]["load_average_end"] = list(os.getloadavg())

    print()
    proxy = (
        f" (PROXY: {len(subset)}-doc subset, not comparable to the published figure)"
        if args.eval_docs
        else ""
    )
    print(f"SciFact test, {len(test_ids)} claims, corpus {len(subset)} docs{proxy}")
    print(table(results, dims))
    base_all = results["models"].get("base (all docs)", results["models"]["base"])["metrics"][str(full_dim)]
    base_nd_all = base_all["ndcg@10"]
    print(
        f"base NDCG@10 on all docs {base_nd_all:.4f} vs published {PUBLISHED_BASE}"
        f" ({base_nd_all - PUBLISHED_BASE:+.4f})"
    )
    for sc, s in scenarios.items():
        verdict = "MET" if s["goal_met"] else ("not judged (proxy eval)" if args.eval_docs else "MISSED")
        tr = s["training"]
        print(
            f"scenario {sc}: NDCG@10 {s['ndcg@10']:.4f} ({s['delta_vs_base']:+.4f} vs base);"
            f" goal >= {s['goal']}: {verdict}; {tr['examples']} pairs, {tr['steps']} steps,"
            f" peak memory {tr['peak_memory_mb']:.0f} MiB "
            f"({'under' if tr['peak_memory_mb'] < 3072 else 'OVER'} 3 GiB)"
        )
        for m, row in s["vs_base"].items():
            print(
                f"  {m:<10} base {row['base']:.4f} -> {row['new']:.4f}  delta {row['delta']:+.4f}"
                f"  95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]  p={row['p_value']:.3g}"
            )
        if s["model_dir"]:
            print(f"  model kept in {s['model_dir']}")
    if "step_compare" in results:
        sc = results["step_compare"]
        print(
            f"step time (batch {sc['config']['batch_size']}, loss {sc['config']['loss']}): ours "
            f"{sc['ours_s_per_step']:.2f} s/step, bare sentence-transformers"
            f" {sc['st_s_per_step']:.2f} s/step, "
            f"ratio {sc['ratio']:.3f}: {'within' if sc['within_5pct'] else 'NOT within'} 5%"
        )
    print("wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in stages.items()))
    suffix = f"_{args.tag}" if args.tag else ""
    name = f"embeddings_{'quick' if args.eval_docs else 'full'}_{args.scenario}{suffix}.json"
    (args.out / name).write_text(json.dumps(results, indent=1))
    print(f"results: {args.out / name}")
    return 0


# Listwise teacher targets (the distill_kl objective): an experiment of this benchmark only.
@dataclass(frozen=True)
class TeacherList:
    """Candidates of one query and the teacher's score of each, for listwise distillation."""

    indices: tuple[int, ...]
    scores: tuple[float, ...]


def teacher_lists(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    queries: list[str],
    bm25: Any,
    sources: list[int],
    documents: list[str],
    *,
    size: int = 8,
    head: int = 4,
    candidates: int = 50,
    bm25_share: float = 0.3,
    seed: int = 42,
) -> list[TeacherList | None]:
    """``size`` scored candidates per query (``None`` when fewer remain): the teacher's top
    ``head`` (source excluded, as for pairs) and ``size - head`` drawn from the rest of its top
    ``candidates``, seeded by ``seed`` and the query's text. A listwise loss (KL divergence of
    the score distributions) learns the teacher's whole ordering of them, not one margin."""
    if not 0 <= head <= size or size < 2:
        raise ValueError(f"need 2 <= size and 0 <= head <= size, got size={size}, head={head}")
    from ragd_train.generate.teacher import query_rng, ranked_candidates

    out: list[TeacherList | None] = []
    ranked = ranked_candidates(
        query_emb, corpus_emb, queries, bm25, sources, documents, candidates, bm25_share
    )
    for query, (scores, cand) in zip(queries, ranked, strict=True):
        if len(cand) < size:
            out.append(None)
            continue
        rest = query_rng(seed, query).choice(cand[head:], size=size - head, replace=False)
        picked = [int(i) for i in cand[:head]] + sorted(int(i) for i in rest)
        out.append(TeacherList(tuple(picked), tuple(round(float(scores[i]), 6) for i in picked)))
    return out


if __name__ == "__main__":
    sys.exit(main())
