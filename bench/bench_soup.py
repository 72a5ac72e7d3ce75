"""Benchmark: does a uniform weight average ("model soup") of fine-tuned students beat each of them?

Students distilled from the same base on the same corpus (``bench_embeddings.py --save-model``)
differ in data, length or pair sampling; averaging their weights (Wortsman et al., 2022) often
lands in a better point of the same basin than any one of them. One run, on BEIR SciFact (read
in place from ``../shared/data/scifact``, CC BY-NC, never copied), measures side by side on the
300 test claims: the base all-MiniLM-L6-v2, every ingredient, and their uniform average, each
compared with the base by the package's paired bootstrap and sign-flip test.

Corpus embeddings of the base and of each ingredient come from ``bench/out/cache`` when
``bench_embeddings.py --save-model`` stored them (same key scheme); the soup is encoded afresh.
Results: ``bench/out/bench_soup[_TAG].json``.

    . .venv/bin/activate
    python bench/bench_soup.py bench/out/scifact-embeddings-a-distill-nomrl \\
        bench/out/scifact-embeddings-a-distill6k --tag two
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_DATA,
    DEFAULT_OUT,
    ENCODE_BATCH,
    METRIC_KEYS,
    MODEL,
    cached_encode,
    evaluate_model,
    load_model,
    load_scifact,
    log,
    offline,
    retrieval,
    summarise,
    versus_base,
)

offline()


def average_weights(model_dirs: list[Path], out_dir: Path) -> None:
    """Copy the first model directory to ``out_dir`` with every tensor averaged over all models."""
    from safetensors.torch import load_file, save_file

    states = [load_file(str(d / "model.safetensors")) for d in model_dirs]
    keys = set(states[0])
    for d, state in zip(model_dirs[1:], states[1:], strict=True):
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise SystemExit(f"{d}: its weights do not match {model_dirs[0]}'s (different architecture)")
    shutil.copytree(model_dirs[0], out_dir)
    soup = {k: sum(s[k].float() for s in states) / len(states) for k in keys}
    save_file(
        {k: v.to(states[0][k].dtype).contiguous() for k, v in soup.items()},
        str(out_dir / "model.safetensors"),
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path, help="fine-tuned model directories (same architecture)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache", type=Path, default=DEFAULT_OUT / "cache")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--tag", default="")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bootstrap-samples", type=int, default=10_000)
    args = p.parse_args()
    from ragd_train.encoding import encode
    from ragd_train.hub import resolve_model

    missing = [str(m) for m in args.models if not (m / "model.safetensors").is_file()]
    if missing:
        raise SystemExit(f"no model.safetensors in: {', '.join(missing)}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = load_scifact(args.data, Path(tmp))
        test_ids = [q for q in d["qrels"]["test"] if q in d["queries"]]
        everything = list(range(len(d["texts"])))
        base_path = resolve_model(MODEL)
        base = load_model(base_path)
        base_full, _, _ = cached_encode(base, [base_path, ENCODE_BATCH], d["texts"], args.cache)
        full = str(base_full.shape[1])
        dims = [int(full)]
        base_q = encode(base, [d["queries"][q] for q in test_ids], ENCODE_BATCH)
        rows: dict[str, dict[str, Any]] = {
            "base": summarise(retrieval(d, test_ids, everything, dims, base_q, base_full))
        }
        for m in args.models:
            log(f"ingredient {m}")
            rows[m.name] = evaluate_model(
                load_model(str(m)), d, test_ids, everything, dims, args.cache, resolve_model(str(m))
            )
        soup_dir = Path(tmp) / "soup"
        t = time.perf_counter()
        average_weights(args.models, soup_dir)
        log(f"soup of {len(args.models)} models: encoding the corpus")
        rows["soup"] = evaluate_model(load_model(str(soup_dir)), d, test_ids, everything, dims, None, None)
        soup_s = time.perf_counter() - t
    print(f"\nSciFact test, {len(test_ids)} claims, corpus {len(d['texts'])} docs, dim {full}")
    head = f"{'model':<42}" + "".join(f"{k:>12}" for k in METRIC_KEYS) + f"{'ndcg@10 vs base, 95% CI':>34}"
    print(head + "\n" + "-" * len(head))
    report: dict[str, Any] = {"models": [str(m) for m in args.models], "rows": {}}
    for name, row in rows.items():
        metrics = row["metrics"][full]
        line = f"{name:<42}" + "".join(f"{metrics[k]:>12.4f}" for k in METRIC_KEYS)
        entry: dict[str, Any] = {"metrics": metrics}
        if name != "base":
            stats = versus_base(rows["base"], row, args.bootstrap_samples, args.seed)
            nd = stats["ndcg@10"]
            line += f"   {nd['delta']:+.4f} [{nd['ci_low']:+.4f}, {nd['ci_high']:+.4f}] p={nd['p_value']:.3g}"
            entry["vs_base"] = stats
        report["rows"][name] = entry
        print(line)
    report["soup_s"] = round(soup_s, 2)
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    print(f"soup: averaging + encoding + eval {soup_s:.0f} s; wall {report['wall_s']:.0f} s")
    out = args.out / f"bench_soup{'_' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
