"""bf16 against fp32 on this CPU: corpus encoding and training steps, speed and what it costs.

Side by side in one run, on the same machine:

1. **Encoding speed**: our encoder with ``encoding.precision: auto`` (``CachedEncoder``, no cache)
   against a bare fp32 ``SentenceTransformer.encode`` of the same first ``--encode-texts`` SciFact
   abstracts, alternating, best of ``--repeats``.
2. **Training speed**: the same ``--steps`` optimizer steps on the same training records (the
   workflow's ``train.jsonl``), once with ``embeddings.precision: fp32`` and once ``bf16``;
   the ratio of their training-loop times (``train_time_s`` in ``training_metadata.json``).
   The weight choice is off (``interpolation: [1.0]``) so each model is the one its precision trained.
3. **Quality**: NDCG@10 (dense) on SciFact's 300 test claims, over a sub-corpus of every abstract
   that answers one plus ``--corpus`` others (seeded): the base and the bf16-trained model each
   encoded in fp32 and in bf16 (the encoding's cost), and the fp32-trained model in fp32 (the
   training's cost).

    python bench/bench_precision.py --train bench/out/q1/scifact/training_data/scifact/train.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, DEFAULT_OUT, MODEL


def sub_corpus(data: Path, extra: int, seed: int) -> tuple[list[str], list[str], dict[str, str], dict]:
    """(doc ids, texts, test claims, qrels) with every relevant abstract plus ``extra`` others."""
    from bench_workflow import scifact_questions

    qfile = scifact_questions(data, "test", Path(os.environ.get("TMPDIR", "/tmp")) / "claims.jsonl")
    claims = [json.loads(x) for x in qfile.read_text().splitlines()]
    docs = [json.loads(x) for x in (data / "corpus.jsonl").read_text().splitlines() if x.strip()]
    relevant = {d for c in claims for d in c["documents"]}
    others = [d for d in docs if str(d["_id"]) not in relevant]
    random.Random(seed).shuffle(others)
    chosen = [d for d in docs if str(d["_id"]) in relevant] + others[:extra]
    ids = [str(d["_id"]) for d in chosen]
    texts = [f"{d.get('title', '')}\n\n{d['text']}".strip() for d in chosen]
    queries = {c["query_id"]: c["query"] for c in claims}
    qrels = {c["query_id"]: set(c["documents"]) for c in claims}
    return ids, texts, queries, qrels


def ndcg10(q: np.ndarray, c: np.ndarray, ids: list[str], qrels: list[set[str]]) -> float:
    top = np.argsort(-(q @ c.T), axis=1)[:, :10]
    total = 0.0
    for row, rel in zip(top, qrels, strict=True):
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(row) if ids[i] in rel)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(10, len(rel))))
        total += dcg / idcg
    return total / len(qrels)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, required=True, help="the workflow's train.jsonl")
    parser.add_argument("--scifact", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "precision")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--corpus", type=int, default=1500, help="abstracts besides the relevant ones")
    parser.add_argument("--encode-texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    from ragd_train.embeddings.train import EmbeddingTrainingConfig, train_embeddings
    from ragd_train.encoding import CachedEncoder, encode
    from ragd_train.hub import resolve_model

    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}", flush=True)
    ids, texts, queries, qrels = sub_corpus(args.scifact.resolve(), args.corpus, 0)
    qtexts, qrel_list = list(queries.values()), list(qrels.values())
    results: dict = {"corpus": len(ids), "claims": len(qtexts)}

    # 1. encoding speed: ours (auto) vs a bare fp32 encode, alternating
    sample = texts[: args.encode_texts]
    bare = SentenceTransformer(resolve_model(MODEL), trust_remote_code=False)
    ours = CachedEncoder(MODEL, None)
    ours.model  # noqa: B018 (loaded before timing, as the bare model is)
    times: dict[str, list[float]] = {"bare_fp32": [], "ours": []}
    for r in range(args.repeats):
        for side in ("bare_fp32", "ours") if r % 2 == 0 else ("ours", "bare_fp32"):
            t = time.perf_counter()
            if side == "ours":
                ours.encode(sample)
            else:
                bare.encode(sample, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)
            times[side].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    results["encoding"] = {
        "texts": len(sample),
        "ours_precision": ours.precision,
        "times_s": times,
        "speed_ratio": best["bare_fp32"] / best["ours"],
    }
    print(f"encoding: {results['encoding']}", flush=True)

    # 2. training: the same steps and records in fp32 and in bf16
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    models = {}
    for precision in ("fp32", "bf16"):
        cfg = EmbeddingTrainingConfig(max_steps=args.steps, precision=precision, interpolation=[1.0])
        meta = train_embeddings(args.train, args.out / precision, cfg)
        models[precision] = {"train_time_s": meta["train_time_s"], "precision": meta["precision"]}
        print(f"trained {precision}: {models[precision]}", flush=True)
    results["training"] = models | {
        "steps": args.steps,
        "speed_ratio": models["fp32"]["train_time_s"] / models["bf16"]["train_time_s"],
    }

    # 3. quality: NDCG@10 on the 300 test claims
    quality = {}
    for name, path, precisions in (
        ("base", resolve_model(MODEL), ("fp32", "bf16")),
        ("bf16-trained", str(args.out / "bf16"), ("fp32", "bf16")),
        ("fp32-trained", str(args.out / "fp32"), ("fp32",)),
    ):
        model = SentenceTransformer(path, trust_remote_code=False)
        for p in precisions:
            t = time.perf_counter()
            c = encode(model, texts, precision=p)
            q = encode(model, qtexts, precision=p)
            quality[f"{name}/{p}"] = {"ndcg@10": ndcg10(q, c, ids, qrel_list), "s": time.perf_counter() - t}
            print(f"{name} encoded {p}: {quality[f'{name}/{p}']}", flush=True)
    results["quality"] = quality
    results["load_average_end"] = os.getloadavg()
    (args.out / "summary.json").write_text(json.dumps(results, indent=2))
    q = {k: v["ndcg@10"] for k, v in quality.items()}
    print("\n== bf16 vs fp32 ==")
    print(
        f"encoding {len(sample)} abstracts: ours ({ours.precision}) {best['ours']:.1f} s, bare fp32 "
        f"{best['bare_fp32']:.1f} s: {results['encoding']['speed_ratio']:.2f}x"
    )
    print(
        f"training {args.steps} steps: fp32 {models['fp32']['train_time_s']:.0f} s, bf16 "
        f"{models['bf16']['train_time_s']:.0f} s: {results['training']['speed_ratio']:.2f}x"
    )
    print(f"NDCG@10, 300 test claims over {len(ids)} abstracts:")
    print(
        f"  base: fp32 {q['base/fp32']:.4f}, bf16 {q['base/bf16']:.4f} "
        f"({q['base/bf16'] - q['base/fp32']:+.4f})"
    )
    print(
        f"  bf16-trained: fp32 {q['bf16-trained/fp32']:.4f}, bf16 {q['bf16-trained/bf16']:.4f} "
        f"({q['bf16-trained/bf16'] - q['bf16-trained/fp32']:+.4f})"
    )
    print(
        f"  trained in fp32 vs bf16 (both encoded fp32): {q['fp32-trained/fp32']:.4f} vs "
        f"{q['bf16-trained/fp32']:.4f} ({q['bf16-trained/fp32'] - q['fp32-trained/fp32']:+.4f})"
    )
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
