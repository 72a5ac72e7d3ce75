"""The peft backend: transformers + PEFT LoRA in fp32, for small models on CPU (the shared pieces
it trains with are in ``torch_lora``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.base_models import estimate_params, resolve_weights
from ragd_train.llm.estimates import check_cpu_feasible
from ragd_train.llm.lora_config import LoraTrainingConfig
from ragd_train.llm.torch_lora import (
    check_targets,
    eval_loss,
    load_base,
    save_adapter,
    tokenize_records,
    train_loop,
)

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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    estimate = None
    if device == "cpu":
        torch.set_num_threads(max(1, threads))
        estimate = check_cpu_feasible(cfg, estimate_params(weights, cfg.base_model), records, threads)
        log.info(
            "estimated for this CPU run: %.1f GB of memory, %.2f h", estimate["memory_gb"], estimate["hours"]
        )
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_base(weights)
    model.to(device)
    # Recompute each layer's activations in the backward pass: memory for a layer's inputs only
    # (an fp32 135M model at 4 x 500 tokens needs ~9 GB without it), for ~30% more compute.
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
    before = eval_loss(model, held_out, pad_id=pad, device=device)  # LoRA starts as a no-op: the base's loss
    log.info(
        "training a rank-%d LoRA (%d parameters) on %s with peft on %s: %d examples, %d epochs, %d threads",
        cfg.lora_rank,
        trainable,
        cfg.base_model,
        device,
        len(examples),
        cfg.epochs,
        threads,
    )
    t0 = time.monotonic()
    history = train_loop(model, examples, cfg, pad_id=pad, device=device)
    train_time = time.monotonic() - t0
    after = eval_loss(model, held_out, pad_id=pad, device=device)
    save_adapter(model, staging, str(weights))
    return {
        "base_model_path": str(weights),
        "backend_options": options,
        "device": device,
        "threads": threads,
        "cpu_estimate": estimate,
        "training_examples": len(examples),
        "skipped_too_long": skipped,
        "trainable_parameters": trainable,
        "loss_history": history,
        "held_out": {"examples": len(held_out), "loss_before": before, "loss_after": after},
        "train_time_s": round(train_time, 2),
    }
