"""Base vs fine-tuned embeddings inside ragd's own search (hybrid and semantic), side by side.

For each model, a fresh ragd home is made, `ragd index <corpus folder>` (ragd 1.0.10's own CLI)
builds ragd's Chroma + BM25 index with that model, and every evaluation query goes through ragd's
own ``hybrid_search`` (what `ragd search` calls) in each mode. Relevance is by document: a query's
``source_document`` (the demo's file stem) against ragd's ``document_name``. Prints NDCG@10 and
MRR@10 with 95% paired-bootstrap CIs of the gain, measured in one run.

    .venv/bin/python bench/bench_ragd.py                      # demo: models/demo-embeddings vs its base
    .venv/bin/python bench/bench_ragd.py --model DIR --queries training_data/demo/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, use_tests

use_tests()

MODES = ("hybrid", "semantic")


def _ragd_search_runs(model: str, folder: Path, queries: list[str], home: Path) -> dict[str, list[list[str]]]:
    """Index ``folder`` with ragd under ``model`` and rank every query with ragd's own search.

    The searches run in a child process whose HOME is the fresh ragd home (ragd fixes its paths
    at import time from HOME).
    """
    from ragd_home import prepare_ragd_home, run_ragd

    env = prepare_ragd_home(home, embedding_model=model)
    run_ragd(["index", str(folder)], env)
    code = (
        "import json, sys\n"
        "from ragd.config import load_config\n"
        "from ragd.search.hybrid import hybrid_search\n"
        "cfg = load_config()\n"
        "queries, modes = json.load(sys.stdin)\n"
        "out = {m: [[r.document_name for r in hybrid_search(q, limit=10, mode=m, min_score=0.0, config=cfg)]"
        " for q in queries] for m in modes}\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([queries, list(MODES)]),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"ragd search failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "demo-embeddings")
    parser.add_argument("--base", default=None, help="base model [default: the model's own base]")
    parser.add_argument("--queries", type=Path, default=REPO / "training_data" / "demo" / "test.jsonl")
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "demo", help="the folder ragd indexes")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()

    from ragd_train.evaluate.ir_metrics import mrr_at_k, ndcg_at_k
    from ragd_train.hub import resolve_model
    from ragd_train.jsonl_io import read_jsonl
    from ragd_train.stats import paired_bootstrap

    meta = json.loads((args.model / "training_metadata.json").read_text())
    base = args.base or meta["base_model"]
    records = list(read_jsonl(args.queries))
    queries = [r["query"] for r in records]
    relevant = [{Path(str(r["source_document"])).name: 1} for r in records]
    models = {"base": resolve_model(base), "fine-tuned": str(args.model.resolve())}
    ranked: dict[str, dict[str, list[list[str]]]] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ragd-") as tmp:
        for name, path in models.items():
            start = time.monotonic()
            runs = _ragd_search_runs(path, args.corpus, queries, Path(tmp) / name)
            # ragd's document_name is the file name; the demo's documents are named by their stem
            ranked[name] = {m: [[Path(d).stem for d in docs] for docs in r] for m, r in runs.items()}
            timings[name] = time.monotonic() - start
    print(f"{len(queries)} queries from {args.queries}; corpus {args.corpus}; base {base}")
    print(f"ragd index + search: base {timings['base']:.0f} s, fine-tuned {timings['fine-tuned']:.0f} s")
    print(f"{'mode':<9} {'metric':<8} {'base':>7} {'tuned':>7} {'delta':>8}  95% CI of delta")
    for mode in MODES:
        for metric, fn in (("ndcg@10", ndcg_at_k), ("mrr@10", mrr_at_k)):
            b = fn(ranked["base"][mode], relevant, 10)
            t = fn(ranked["fine-tuned"][mode], relevant, 10)
            ci = paired_bootstrap(b, t, samples=args.samples, seed=0)
            print(
                f"{mode:<9} {metric:<8} {b.mean():7.4f} {t.mean():7.4f} {ci['delta']:+8.4f}  "
                f"[{ci['ci_low']:+.4f}, {ci['ci_high']:+.4f}]"
            )


if __name__ == "__main__":
    main()
