"""Benchmark: does the promotion gate reject a deliberately broken embedding model on SciFact?

One run, on BEIR SciFact (read in place from ``../shared/data/scifact``, CC BY-NC, never copied):

1. Breaks ``sentence-transformers/all-MiniLM-L6-v2`` on purpose: the package's own training,
   ``ragd_train.embeddings.train.train_embeddings``, on the human training claims (``qrels/train.tsv``,
   (claim, relevant abstract) pairs, no hard negatives) with a huge learning rate (``--lr`` 5e-3)
   for ``--steps`` steps (default 24; batch 32, train max_seq_length 128, 1 epoch).
2. Judges it with the package's promotion gate, ``ragd_train.evaluate.embeddings.evaluate_models``
   (base vs model on the 300 test claims against the full 5,183-abstract snapshot; paired
   bootstrap 95% CI and sign-flip p-value; verdict ``promoted`` only for a positive NDCG@10 delta
   of at least ``--require-improvement``) and ``gate_message``.
3. In the same run and table, judges a reference model too (``--good-model``, by default the
   scenario-a model kept by ``bench_embeddings.py --save-model bench/out/scifact-embeddings-a``) when
   its directory exists. The gate must reject the broken model (the exit status says whether it
   did); the reference row has no expected verdict: it shows what the gate makes of a real
   fine-tune, which it should promote only if that beats the base.

The gate loads each model as it was saved (``ragd_train.encoding.load_encoder``). A model trained by
``train_embeddings`` keeps its training max_seq_length (128) in its tokenizer config, so the gate
encodes the corpus at 128 tokens for it and at 256 for the base. ``--good-seq 256`` also judges
the good model at the base's 256 tokens, which is how ``bench_embeddings.py`` measures it.

Corpus embeddings of the base (and of the good model) are read from ``bench/out/cache`` (the key
scheme of bench_embeddings.py / bench_reranker.py; other lengths get their own key with the
weights' size and mtime) by wrapping ``ragd_train.encoding.encode``; the broken model is always
encoded afresh. Results: ``bench/out/bench_gate.json``.

    . .venv/bin/activate
    python bench/bench_gate.py                 # ~10 min on the 2-core box
    python bench/bench_gate.py --good-seq 256  # also judge the good model at 256 tokens
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    ENCODE_BATCH,
    MODEL,
    cache_file,
    claim_ids,
    load_scifact,
    log,
    offline,
    plain_args,
    relevant_pairs,
    write_cache,
)
from common import EVAL_SEQ as BASE_SEQ  # the base model's own max_seq_length, at which the cache was filled

offline()


def split_records(d: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """One record per (claim, relevant abstract) of ``split``: train.jsonl / test.jsonl format."""
    return [
        {
            "query": d["queries"][q],
            "query_id": q,
            "positive": d["texts"][i],
            "positive_id": d["chunk_ids"][i],
            "negatives": [],
            "source_document": d["doc_ids"][i],
        }
        for q, i in relevant_pairs(d, split, claim_ids(d, split))
    ]


class EncodeCache:
    """Wraps ``ragd_train.encoding.load_encoder``/``encode`` so that corpus encodings come from disk.

    Only models whose resolved path is in ``cacheable`` are looked up; ``seq`` (path -> length)
    overrides the max_seq_length a model was saved with.
    """

    def __init__(self, cache: Path, cacheable: set[str]) -> None:
        import ragd_train.encoding as mining

        self.mining = mining
        self.cache = cache
        self.cacheable = cacheable
        self.seq: dict[str, int] = {}
        self.loaded: dict[str, int] = {}  # path -> max_seq_length it was encoded at
        self.encoded: dict[str, dict[str, Any]] = {}
        self._load, self._encode = mining.load_encoder, mining.encode
        mining.load_encoder, mining.encode = self.load_encoder, self.encode

    def restore(self) -> None:
        self.mining.load_encoder, self.mining.encode = self._load, self._encode

    def load_encoder(self, name: str) -> Any:
        from ragd_train.hub import resolve_model

        model = self._load(name)
        path = resolve_model(name)
        model._bench_path = path
        if path in self.seq:
            model.max_seq_length = self.seq[path]
        self.loaded[path] = int(model.max_seq_length)
        return model

    def _file(self, path: str, seq: int, texts: list[str]) -> Path:
        parts: list[Any] = [path, ENCODE_BATCH]
        if seq != BASE_SEQ:  # bench_embeddings.py / bench_reranker.py keys hold 256-token encodings only
            weights = Path(path) / "model.safetensors"
            stat = weights.stat() if weights.is_file() else None
            parts += [f"max_seq_length={seq}", stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]
        return cache_file(self.cache, parts, texts)

    def encode(
        self, model: Any, texts: list[str], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        path = getattr(model, "_bench_path", None)
        seq = int(model.max_seq_length)
        if path is None or path not in self.cacheable or len(texts) < 1000:
            t = time.perf_counter()
            emb = self._encode(model, texts, batch_size, progress)
            if len(texts) >= 1000:
                self.encoded[f"{Path(path or '?').name}@{seq}"] = {
                    "cached": False,
                    "seconds": round(time.perf_counter() - t, 2),
                }
            return emb
        npy = self._file(path, seq, texts)
        if npy.is_file():
            self.encoded[f"{Path(path).name}@{seq}"] = {"cached": True, "seconds": 0.0}
            return np.load(npy)
        t = time.perf_counter()
        log(f"encoding {len(texts)} texts with {Path(path).name} at max_seq_length {seq}")
        emb = self._encode(model, texts, batch_size, progress)
        seconds = time.perf_counter() - t
        self.encoded[f"{Path(path).name}@{seq}"] = {"cached": False, "seconds": round(seconds, 2)}
        write_cache(npy, emb, seconds)
        return emb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT / "bench_gate.json")
    p.add_argument("--cache", type=Path, default=DEFAULT_OUT / "cache")
    p.add_argument("--broken-dir", type=Path, default=DEFAULT_OUT / "scifact-embeddings-broken")
    p.add_argument("--good-model", type=Path, default=DEFAULT_OUT / "scifact-embeddings-a")
    p.add_argument(
        "--good-seq", type=int, default=0, help="also judge the good model at this max_seq_length (0: no)"
    )
    p.add_argument("--lr", type=float, default=5e-3, help="the deliberately huge learning rate")
    p.add_argument("--steps", type=int, default=24, help="training steps (rows = steps x batch)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--train-seq", type=int, default=128)
    p.add_argument("--require-improvement", type=float, default=0.0)
    p.add_argument("--bootstrap-samples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    import torch

    from ragd_train.embeddings.train import EmbeddingTrainingConfig, train_embeddings
    from ragd_train.evaluate.embeddings import evaluate_models, gate_message
    from ragd_train.hub import resolve_model
    from ragd_train.jsonl_io import write_json, write_jsonl
    from ragd_train.progress import setup_logging

    setup_logging()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    start = time.perf_counter()
    stages: dict[str, Any] = {}
    load_start = list(os.getloadavg())
    base_path = resolve_model(MODEL)
    good = args.good_model if (args.good_model / "model.safetensors").is_file() else None
    if good is None:
        log(f"no good model in {args.good_model} (run bench_embeddings.py --save-model first); skipped")
    cache = EncodeCache(args.cache, {base_path} | ({resolve_model(str(good))} if good else set()))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_gate_") as tmp:
        work = Path(tmp)
        d = load_scifact(args.data, work)
        test_path = work / "test.jsonl"
        tests = split_records(d, "test")
        write_jsonl(test_path, [{k: r[k] for k in ("query", "query_id", "positive_id")} for r in tests])
        train = split_records(d, "train")
        random.Random(args.seed).shuffle(train)
        train = train[: args.steps * args.batch_size]
        train_path = work / "train.jsonl"
        write_jsonl(train_path, train)
        log(
            f"SciFact: {len(d['texts'])} abstracts, {len({r['query_id'] for r in tests})} test claims;"
            f" breaking {MODEL} with lr {args.lr} on {len(train)} train pairs"
        )
        cfg = EmbeddingTrainingConfig(
            base_model=MODEL,
            epochs=1,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            max_seq_length=args.train_seq,
            hard_negatives=0,
            seed=args.seed,
        )
        shutil.rmtree(args.broken_dir, ignore_errors=True)
        args.broken_dir.parent.mkdir(parents=True, exist_ok=True)
        meta = train_embeddings(train_path, args.broken_dir, cfg, device="cpu")
        losses = [h["loss"] for h in meta["loss_history"]]
        stages["train_broken_s"] = round(meta["train_time_s"], 2)
        log(
            f"broken model: {len(losses)} steps in {meta['train_time_s']:.0f} s,"
            f" loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        )

        candidates: list[tuple[str, Path, int | None, str | None]] = [
            (f"broken (lr {args.lr:g}, {len(losses)} steps)", args.broken_dir, None, "rejected")
        ]
        if good is not None:
            candidates.append((f"reference ({good.name})", good, None, None))
            if args.good_seq:
                candidates.append((f"reference ({good.name})", good, args.good_seq, None))
        for name, model_dir, seq, expected in candidates:
            cache.seq = {resolve_model(str(model_dir)): seq} if seq else {}
            t = time.perf_counter()
            report = evaluate_models(
                model_dir,
                MODEL,
                test_path,
                d["snapshot"],
                require_improvement=args.require_improvement,
                bootstrap_samples=args.bootstrap_samples,
                seed=args.seed,
            )
            seconds = round(time.perf_counter() - t, 2)
            verdict = report["gate"]["verdict"]
            h = report["headline"]
            full = str(report["dims"][0])
            mrr = report["metrics"][full]["mrr@10"]
            rows.append(
                {
                    "model": name,
                    "model_dir": str(model_dir),
                    "eval_seq": cache.loaded[resolve_model(str(model_dir))],
                    "eval_seq_forced": bool(seq),
                    "headline": h,
                    "mrr@10": mrr,
                    "verdict": verdict,
                    "expected": expected,
                    "correct": None if expected is None else verdict == expected,
                    "message": gate_message(report),
                    "evaluate_s": seconds,
                    "encodings": dict(cache.encoded),
                    "report": {k: v for k, v in report.items() if k != "ragas"},
                }
            )
            cache.encoded.clear()
            log(f"{name} @ {rows[-1]['eval_seq']} tokens: {verdict} ({seconds:.0f} s)")
    cache.restore()
    stages["total_s"] = round(time.perf_counter() - start, 2)
    result = {
        "benchmark": "promotion gate on SciFact",
        "base_model": MODEL,
        "args": plain_args(args),
        "broken_training": {
            "steps": len(losses),
            "examples": meta["training_examples"],
            "loss_history": meta["loss_history"],
            "peak_memory_mb": meta["peak_memory_mb"],
        },
        "rows": rows,
        "stages_s": stages,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": list(os.getloadavg()),
        },
    }
    write_json(args.out, result)

    print()
    claims = len({r["query_id"] for r in tests})
    print(
        f"SciFact test, {claims} claims, full corpus ({len(d['texts'])} docs);"
        f" base {MODEL} at {BASE_SEQ} tokens"
    )
    head = (
        f"{'model':<28}{'seq':>9}{'base':>8}{'model':>8}{'delta':>9}  {'95% CI':<20}{'p':>8}"
        f"{'MRR@10':>8}  {'verdict':<9}{'expected':<9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        h = r["headline"]
        ci = f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}]"
        print(
            f"{r['model']:<28}{str(r['eval_seq']):>9}{h['base']:>8.4f}{h['finetuned']:>8.4f}{h['delta']:>+9.4f}"
            f"  {ci:<20}{h['p_value']:>8.3g}{r['mrr@10']['finetuned']:>8.4f}  {r['verdict']:<9}"
            f"{'-' if r['expected'] is None else r['expected'] + (' ok' if r['correct'] else ' WRONG')}"
        )
    for r in rows:
        print(f"- {r['model']} @ {r['eval_seq']} tokens: {r['message']}")
    caught = rows[0]["verdict"] == "rejected"
    print(f"broken model caught by the gate: {'YES' if caught else 'NO'}")
    print(f"stages (s): {json.dumps(stages)}; load average {result['machine']['load_average_end']}")
    print(f"written: {args.out}")
    return 0 if caught else 1


if __name__ == "__main__":
    sys.exit(main())
