"""What CPU training would cost, estimated before it starts, so that a hopeless run stops with guidance."""

from __future__ import annotations

import logging
import math
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.lora_config import LoraTrainingConfig

log = logging.getLogger("ragd_train")


def approx_tokens(records: list[dict[str, Any]], max_length: int) -> float:
    """Tokens per example, estimated from characters (about 3.5 per token), capped at max_length."""
    if not records:
        return 0.0
    sizes = [min(max_length, sum(len(m["content"]) for m in r["messages"]) / 3.5) for r in records]
    return sum(sizes) / len(sizes)


CPU_GFLOPS_PER_THREAD = 25.0  # sustained fp32 training throughput of one core, roughly


def cpu_estimate(
    params: float,
    examples: int,
    tokens: float,
    epochs: int,
    threads: int,
    batch_size: int = 4,
    *,
    checkpointing: bool = True,
) -> dict[str, float]:
    """Memory (GB) and time (hours) of a LoRA run on CPU in fp32.

    Memory: the fp32 weights plus a third (LoRA state, optimiser, buffers), 2 GB for the process,
    and the activations of one pass of ``batch_size`` examples (the micro-batch): with gradient
    checkpointing each layer's input kept for the backward pass (8 bytes a token per layer x hidden
    unit) plus one layer recomputed in full (~200 bytes a token per hidden unit); without it every
    layer's activations (~100 bytes a token per layer x hidden unit, measured for smollm2:135m).
    ``layers x hidden`` is taken as ``sqrt(28 x params / 12)`` (a 28-layer transformer).
    Time: ``cpu_step_seconds``.
    """
    layers_x_hidden = math.sqrt(28 * params / 12)
    seconds = cpu_step_seconds(params, tokens, 1, threads, checkpointing=checkpointing) * examples * epochs
    batch_tokens = max(1, batch_size) * tokens
    per_token = (8 * layers_x_hidden + 200 * layers_x_hidden / 28) if checkpointing else 100 * layers_x_hidden
    memory_gb = (params * 4 * 1.33 + batch_tokens * per_token) / 1e9 + 2.0
    return {"memory_gb": round(memory_gb, 1), "hours": round(seconds / 3600, 2)}


def cpu_step_seconds(
    params: float,
    tokens: float,
    batch_size: int,
    threads: int,
    *,
    checkpointing: bool = True,
    bf16: bool = False,
) -> float:
    """Seconds of one optimizer step of ``batch_size`` examples of ``tokens`` tokens on CPU: about
    8 x params FLOPs a token with gradient checkpointing (forward, recomputation, backward through
    the frozen weights), 6 x without, at ``CPU_GFLOPS_PER_THREAD`` per thread in fp32, twice that
    under bf16 autocast on a CPU with native bf16 (measured 2.0-2.5x)."""
    flops = (8 if checkpointing else 6) * params * tokens * max(1, batch_size)
    return flops / (CPU_GFLOPS_PER_THREAD * 1e9 * max(1, threads) * (2.0 if bf16 else 1.0))


def available_memory_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().available / 1e9
    except ImportError:  # pragma: no cover - psutil is a dependency
        return float("inf")


def cpu_guidance(
    cfg: LoraTrainingConfig, params: float, estimate: dict[str, float], available_gb: float
) -> str:
    """Why a CPU run is not started, and the routes that work."""
    return (
        f"training {cfg.base_model} ({params / 1e9:.2f}B parameters) with the peft backend on this CPU "
        f"would need about {estimate['memory_gb']:.0f} GB of memory ({available_gb:.0f} GB available) and "
        f"about {estimate['hours']:.1f} h (limit llm.max_cpu_hours: {cfg.max_cpu_hours:g}); "
        "not started. "
        "Routes that work: on an NVIDIA GPU, the unsloth backend (4-bit base, minutes per epoch): "
        "`snakemake --profile profiles/slurm --config 'llm={backend: unsloth}' "
        "-- models/<corpus>-llm` "
        "sends rule train_lora to the cluster's GPU partition (docs/cluster.md); on Apple Silicon, "
        "llm.backend: mlx; on this machine, a small base such as llm.base_model: "
        "smollm2:135m, a lower llm.max_examples, or a higher llm.max_cpu_hours"
    )


def check_cpu_feasible(
    cfg: LoraTrainingConfig,
    params: float,
    records: list[dict[str, Any]],
    threads: int,
    examples: int | None = None,
) -> dict[str, float]:
    """Raise with guidance when the run would not fit this machine's memory or time budget.
    ``examples``: the examples the plan trains (steps x batch); every epoch of ``records`` when None."""
    tokens = approx_tokens(records, cfg.max_length)
    if examples is None:
        count, epochs = len(records), cfg.epochs
    else:
        count, epochs = examples, 1
    micro = min(cfg.micro_batch_size, cfg.batch_size)
    estimate = cpu_estimate(
        params, count, tokens, epochs, threads, micro, checkpointing=cfg.gradient_checkpointing
    )
    available = available_memory_gb()
    if estimate["memory_gb"] > 0.9 * available or estimate["hours"] > cfg.max_cpu_hours:
        raise RagdTrainError(cpu_guidance(cfg, params, estimate, available))
    return estimate
