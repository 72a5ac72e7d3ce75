"""The unsloth backend: Unsloth's FastLanguageModel with a 4-bit base and LoRA, on one CUDA GPU.

Everything up to the GPU is plain Python and tested without one: the mapping of the workflow
settings to Unsloth's options, and the checks that stop with a clear message where no CUDA GPU
(or no Unsloth) is present. The training loop and the adapter format are the peft backend's
(Unsloth's model is a PEFT model): ``adapters.safetensors`` + PEFT's ``adapter_config.json``.
``bench/gpu_check.sh`` runs the whole backend on a real GPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.base_models import model_id
from ragd_train.llm.lora_config import LoraTrainingConfig

log = logging.getLogger("ragd_train")


def unsloth_options(cfg: LoraTrainingConfig) -> dict[str, Any]:
    """The workflow settings as ``FastLanguageModel.from_pretrained`` / ``get_peft_model`` arguments."""
    return {
        "from_pretrained": {
            "model_name": model_id(cfg.base_model, "unsloth"),
            "max_seq_length": cfg.max_length,
            "load_in_4bit": True,
            "dtype": None,  # bfloat16 where the GPU has it, else float16
        },
        "get_peft_model": {
            "r": cfg.lora_rank,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "target_modules": list(cfg.lora_target_modules),
            "bias": "none",
            "use_gradient_checkpointing": "unsloth",
            "random_state": cfg.seed,
        },
        "training": {
            "epochs": cfg.epochs,
            "learning_rate": cfg.learning_rate,
            "batch_size": cfg.batch_size,
            "optimizer": "adamw",
            "warmup_ratio": 0.1,
            "max_grad_norm": 1.0,
        },
    }


NO_GPU = (
    "the unsloth backend trains on an NVIDIA GPU, and {why}. Run it where a GPU is: "
    "`snakemake --profile profiles/slurm --config 'llm={{backend: unsloth}}' "
    "-- models/<corpus>-llm` "
    "(rule train_lora asks for gpu=1 and the profile sends it to the GPU partition), or pick a backend "
    "for this machine: llm.backend: peft (CPU, small bases such as smollm2:135m) or mlx "
    "(Apple Silicon)"
)


def check_gpu() -> str:
    """The CUDA device name; a RagdTrainError that says what to do where there is none."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        raise RagdTrainError(NO_GPU.format(why="PyTorch is not installed")) from None
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise RagdTrainError(NO_GPU.format(why=f"PyTorch {torch.__version__} ({build}) sees no CUDA device"))
    return torch.cuda.get_device_name(0)


def import_unsloth() -> Any:
    """Unsloth's FastLanguageModel (Unsloth must be imported before transformers and peft)."""
    try:
        from unsloth import FastLanguageModel
    except ImportError as exc:
        raise RagdTrainError(
            f"the unsloth backend needs Unsloth ({exc}): conda env envs/cuda.yaml "
            "(`snakemake --sdm conda`), or pip install unsloth"
        ) from None
    return FastLanguageModel


def train(
    records: list[dict[str, Any]],
    test_records: list[dict[str, Any]],
    staging: Path,
    cfg: LoraTrainingConfig,
    *,
    threads: int = 1,
) -> dict[str, Any]:
    """QLoRA with Unsloth; writes the adapter into ``staging``."""
    device_name = check_gpu()
    fast = import_unsloth()
    import torch

    from ragd_train.llm.lora_config import plan_lora, steps_per_epoch
    from ragd_train.llm.torch_lora import (
        eval_loss,
        measure_step_time,
        save_adapter,
        tokenize_records,
        train_loop,
    )
    from ragd_train.training import plan_message

    options = unsloth_options(cfg)
    torch.manual_seed(cfg.seed)
    model, tokenizer = fast.from_pretrained(**options["from_pretrained"])
    model = fast.get_peft_model(model, **options["get_peft_model"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, skipped = tokenize_records(tokenizer, records, cfg.max_length)
    if not examples:
        raise RagdTrainError(f"every example is longer than llm.max_length={cfg.max_length} tokens")
    held_out, _ = tokenize_records(tokenizer, test_records, cfg.max_length)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    common = {
        "pad_id": tokenizer.pad_token_id,
        "device": "cuda",
        "autocast_dtype": dtype,
        "slice_logits": False,
    }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    before = eval_loss(model, held_out, **common)
    fast.for_training(model)
    step_time = None
    if cfg.budget_minutes > 0:  # the clock decides only when asked to: measure a step
        with torch.autocast(device_type="cuda", dtype=dtype):
            step_time = measure_step_time(
                model, examples, cfg, pad_id=common["pad_id"], device="cuda", slice_logits=False
            )
        torch.manual_seed(cfg.seed)
    plan = plan_lora(cfg, steps_per_epoch(len(examples), cfg.batch_size), step_time, cfg.batch_size)
    plan["step_time_source"] = "measured" if step_time else None
    what = (
        f"a rank-{cfg.lora_rank} LoRA ({trainable} parameters) on "
        f"{options['from_pretrained']['model_name']} with unsloth on {device_name}"
    )
    log.info("%s", plan_message(plan, what, len(examples), cfg.batch_size))
    torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    history = train_loop(model, examples, cfg, steps=plan["steps"], **common)
    train_time = time.monotonic() - t0
    after = eval_loss(model, held_out, **common)
    save_adapter(model, staging, options["from_pretrained"]["model_name"])
    return {
        "base_model_path": options["from_pretrained"]["model_name"],
        "backend_options": options,
        "base_weights": {"source": "hub", "id": options["from_pretrained"]["model_name"]},
        "training_plan": plan,
        "architecture": getattr(model.config, "model_type", None),
        "device": f"cuda ({device_name})",
        "threads": threads,
        "training_examples": len(examples),
        "skipped_too_long": skipped,
        "trainable_parameters": trainable,
        "loss_history": history,
        "held_out": {"examples": len(held_out), "loss_before": before, "loss_after": after},
        "train_time_s": round(train_time, 2),
        "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    }
