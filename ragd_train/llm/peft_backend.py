"""The peft backend: transformers + PEFT LoRA for small models on CPU, fp32 weights under bf16
autocast where the CPU does bf16 natively (``llm.precision``; the shared pieces it trains with are
in ``torch_lora``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.base_models import estimate_params, resolve_weights, weights_metadata
from ragd_train.llm.estimates import check_cpu_feasible, cpu_step_seconds
from ragd_train.llm.lora_config import LoraTrainingConfig, plan_lora, steps_per_epoch
from ragd_train.llm.torch_lora import (
    check_targets,
    eval_loss,
    load_base,
    measure_step_time,
    save_adapter,
    tokenize_records,
    train_loop,
)
from ragd_train.training import plan_message

log = logging.getLogger("ragd_train")


def peft_options(cfg: LoraTrainingConfig) -> dict[str, Any]:
    """The workflow settings as PEFT's LoraConfig and the training loop's options."""
    return {
        "lora_config": {
            "r": cfg.lora_rank,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "target_modules": list(cfg.lora_target_modules),
            "bias": "none",
            "task_type": "CAUSAL_LM",
        },
        "training": {
            "epochs": cfg.epochs,
            "learning_rate": cfg.learning_rate,
            "batch_size": cfg.batch_size,
            "micro_batch_size": cfg.micro_batch_size,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "max_length": cfg.max_length,
            "optimizer": "adamw",
            "warmup_ratio": 0.1,
            "max_grad_norm": 1.0,
        },
    }


def train(
    records: list[dict[str, Any]],
    test_records: list[dict[str, Any]],
    staging: Path,
    cfg: LoraTrainingConfig,
    *,
    threads: int = 1,
) -> dict[str, Any]:
    """Train with PEFT on CPU (or a GPU if torch sees one); write the adapter into ``staging``."""
    import torch
    from peft import LoraConfig, get_peft_model

    weights = resolve_weights(cfg.base_model, "peft")
    source = weights_metadata(weights)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    params = estimate_params(weights, cfg.base_model)
    estimate = None
    if device == "cpu":
        torch.set_num_threads(max(1, threads))
        # the guard sees the plan's length (before tokenising: every record counted as kept)
        rough = plan_lora(cfg, steps_per_epoch(len(records), cfg.batch_size), None, cfg.batch_size)
        examples_planned = min(rough["steps"] * cfg.batch_size, len(records) * cfg.epochs)
        estimate = check_cpu_feasible(cfg, params, records, threads, examples=examples_planned)
        log.info(
            "estimated for this CPU run: %.1f GB of memory, %.2f h", estimate["memory_gb"], estimate["hours"]
        )
    from ragd_train.precision import resolve_precision

    precision = resolve_precision(cfg.precision, device)
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_base(weights)
    model.to(device)
    if cfg.gradient_checkpointing:  # a layer's inputs kept, the rest recomputed: ~2x the compute
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    options = peft_options(cfg)
    options["lora_config"]["target_modules"] = check_targets(model, cfg.lora_target_modules)
    model = get_peft_model(model, LoraConfig(**options["lora_config"]))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    examples, skipped = tokenize_records(tokenizer, records, cfg.max_length)
    if not examples:
        raise RagdTrainError(f"every example is longer than llm.max_length={cfg.max_length} tokens")
    held_out, _ = tokenize_records(tokenizer, test_records, cfg.max_length)
    pad = tokenizer.pad_token_id
    before = eval_loss(
        model, held_out, pad_id=pad, device=device, autocast_dtype=autocast_dtype
    )  # LoRA starts as a no-op: the base's loss
    timing, step_time = "estimated", None
    if cfg.budget_minutes > 0:  # the clock decides only when asked to: measure a step
        timing = "measured"
        step_time = measure_step_time(
            model, examples, cfg, pad_id=pad, device=device, autocast_dtype=autocast_dtype
        )
        torch.manual_seed(cfg.seed)
    elif device == "cpu":
        tokens = sum(len(ids) for ids, _ in examples) / len(examples)
        step_time = cpu_step_seconds(
            params,
            tokens,
            min(cfg.batch_size, len(examples)),
            threads,
            checkpointing=cfg.gradient_checkpointing,
            bf16=precision == "bf16",
        )
    plan = plan_lora(cfg, steps_per_epoch(len(examples), cfg.batch_size), step_time, cfg.batch_size)
    plan["step_time_source"] = timing if step_time else None
    what = (
        f"a rank-{cfg.lora_rank} LoRA ({trainable} parameters) on {cfg.base_model} "
        f"with peft on {device} ({threads} threads, {precision})"
    )
    log.info("%s", plan_message(plan, what, len(examples), cfg.batch_size, timing))
    t0 = time.monotonic()
    history = train_loop(
        model, examples, cfg, pad_id=pad, device=device, autocast_dtype=autocast_dtype, steps=plan["steps"]
    )
    train_time = time.monotonic() - t0
    after = eval_loss(model, held_out, pad_id=pad, device=device, autocast_dtype=autocast_dtype)
    base_path = source.get("blob") or str(weights)  # Ollama's blob, not the temporary link to it
    save_adapter(model, staging, base_path)
    return {
        "base_model_path": base_path,
        "base_weights": source,
        "architecture": getattr(model.config, "model_type", None),
        "training_plan": plan,
        "backend_options": options,
        "device": device,
        "precision": precision,
        "threads": threads,
        "cpu_estimate": estimate,
        "training_examples": len(examples),
        "skipped_too_long": skipped,
        "trainable_parameters": trainable,
        "loss_history": history,
        "held_out": {"examples": len(held_out), "loss_before": before, "loss_after": after},
        "train_time_s": round(train_time, 2),
    }
