"""Incremental rebuild on SciFact: a full generation run, then a rerun after changing 1% of the chunks.

Everything runs through the real workflow (`snakemake training_data/scifact/train.jsonl`) with
the Ollama query generator and LLM judge, served by the Ollama-protocol test server of the test
suite (it counts calls; it answers instantly, so wall times here are a lower bound for the full
run, where a real LLM would dominate). Prints, side by side: LLM calls, wall time, and what was
served from the caches; then times `snakemake -n` with nothing changed.

    .venv/bin/python bench/bench_incremental.py [--corpus-limit N] [--change 0.01]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DATA, REPO, use_tests

use_tests()
SCIFACT = DEFAULT_DATA / "corpus.jsonl"
MODEL = "llama3.2:3b"


def responder(body: dict) -> str:
    """Two questions per passage and a judge verdict, derived deterministically from the prompt."""
    prompt = body["messages"][-1]["content"]
    tag = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if prompt.startswith("Rate how well"):
        return json.dumps({"score": 4 + int(tag, 16) % 2, "reason": "ok"})
    return json.dumps([f"What does study {tag} find?", f"Is claim {tag} supported?"])


def slurm_plugin_import_s() -> float | None:
    """Seconds a fresh interpreter takes to import snakemake-executor-plugin-slurm, None when absent."""
    code = "import snakemake_executor_plugin_slurm"
    if subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, sys; "
            "sys.exit(importlib.util.find_spec('snakemake_executor_plugin_slurm') is None)",
        ],
        check=False,
    ).returncode:
        return None
    base = time.monotonic()
    subprocess.run([sys.executable, "-c", "import snakemake"], check=True)
    bare = time.monotonic() - base
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", f"import snakemake; {code}"], check=True)
    return round(time.monotonic() - start - bare, 2)


def snakemake(ws: Path, cfg: Path, *args: str) -> tuple[float, str]:
    """The test suite's workflow runner (tests/helpers.py), without its time limit."""
    from helpers import cfgargs
    from helpers import snakemake as run

    start = time.monotonic()
    out = run(ws, *cfgargs(cfg), *args, timeout=None)
    if out.returncode != 0:
        sys.exit(f"snakemake failed:\n{out.stderr[-3000:]}")
    return time.monotonic() - start, out.stdout + out.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-limit", type=int, default=None, help="Use the first N documents only.")
    parser.add_argument(
        "--change", type=float, default=0.01, help="Fraction of chunks edited before the rerun."
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "incremental.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ollama_server import OllamaTestServer

    work = Path(tempfile.mkdtemp(prefix="ragd-incremental-"))
    corpus = work / "corpus.jsonl"  # a private copy we can edit (outside the repository)
    lines = SCIFACT.read_text(encoding="utf-8").splitlines()[: args.corpus_limit]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ws = work / "ws"
    results: dict[str, dict] = {}
    with OllamaTestServer(models=[MODEL], responder=responder) as srv:
        cfg = work / "bench.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "corpora": {"scifact": {"source": "beir", "path": str(corpus)}},
                    "generate": {"query_generator": "ollama", "queries_per_chunk": 2},
                    "ollama": {"host": srv.url, "model": MODEL, "timeout": 30, "retries": 2, "backoff": 0},
                }
            )
        )
        target = "training_data/scifact/train.jsonl"
        for run in ("full", "rerun"):
            if run == "rerun":
                rng = random.Random(0)
                docs = [json.loads(line) for line in lines]
                edited = rng.sample(range(len(docs)), max(1, round(len(docs) * args.change)))
                for i in edited:
                    docs[i]["text"] += " (Edited after re-indexing.)"
                corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
            calls = srv.calls["/api/chat"]
            wall, _ = snakemake(ws, cfg, "--", target)
            stats = json.loads((ws / "training_data" / "scifact" / "stats.json").read_text())
            gen = stats["generation"]
            results[run] = {
                "llm_calls": srv.calls["/api/chat"] - calls,
                "wall_s": round(wall, 1),
                "generation_s": gen["wall_time_s"],
                "build_s": stats["timings_s"]["total_s"],
                "chunks": gen["chunks"],
                "queries_from_cache": gen["from_cache"],
                "queries_generated": gen["generated"],
                "embeddings_from_cache": stats["mining"]["embeddings_from_cache"],
                "embeddings_computed": stats["mining"]["embeddings_computed"],
            }
        dry, out = snakemake(ws, cfg, "-n", "--", target)
        results["dry_run_nothing_changed"] = {
            "wall_s": round(dry, 2),
            "nothing_to_do": "Nothing to be done" in out,
            "slurm_plugin_import_s": slurm_plugin_import_s(),
        }
    full, rerun = results["full"], results["rerun"]
    data_full = full["generation_s"] + full["build_s"]
    data_rerun = rerun["generation_s"] + rerun["build_s"]
    print(f"\nSciFact, {full['chunks']} chunks, {args.change:.1%} edited before the rerun\n")
    print(f"{'':28}{'full run':>12}{'rerun':>12}{'rerun/full':>12}")
    for label, a, b in [
        ("LLM calls", full["llm_calls"], rerun["llm_calls"]),
        ("data generation s", data_full, data_rerun),
        ("snakemake wall s", full["wall_s"], rerun["wall_s"]),
        ("queries generated", full["queries_generated"], rerun["queries_generated"]),
        ("queries from cache", full["queries_from_cache"], rerun["queries_from_cache"]),
        ("embeddings computed", full["embeddings_computed"], rerun["embeddings_computed"]),
    ]:
        ratio = f"{b / a:.2%}" if a else "-"
        print(
            f"{label:28}{a:>12.1f}{b:>12.1f}{ratio:>12}"
            if isinstance(a, float)
            else f"{label:28}{a:>12}{b:>12}{ratio:>12}"
        )
    d = results["dry_run_nothing_changed"]
    print(f"\nsnakemake -n with nothing changed: {d['wall_s']:.2f} s, nothing to do: {d['nothing_to_do']}")
    if d["slurm_plugin_import_s"] is not None:
        print(
            f"  of which {d['slurm_plugin_import_s']:.2f} s is importing the Slurm executor plugin, which "
            "Snakemake loads at start-up whenever it is installed (it queries sacct/scontrol; slow "
            "without a reachable slurmctld)"
        )
    calls_ok = rerun["llm_calls"] <= 0.015 * full["llm_calls"]
    time_ok = data_rerun <= 0.10 * data_full
    print(
        f"goals: LLM calls <= 1.5% {'met' if calls_ok else 'MISSED'}; data generation time <= 10% "
        f"{'met' if time_ok else 'MISSED'}; dry run < 3 s {'met' if d['wall_s'] < 3 else 'MISSED'}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
