"""LoRA adapters for ragd's chat model, trained on RAFT data by MLX, Unsloth or PEFT.

``llm.backend`` picks the trainer: ``auto`` resolves to ``mlx`` on Apple Silicon,
``unsloth`` where an NVIDIA GPU is present and ``peft`` (CPU) elsewhere. The workflow resolves it
once, when the Snakefile is read, and runs the matching rule (``rules/llm.smk``: ``train_lora_mlx``,
``train_lora`` for unsloth, ``train_lora_peft``). Whatever the backend,
``models/{corpus}-llm/`` ends up holding:

* ``adapters.safetensors``: the LoRA weights only, with ``adapter_config.json`` beside them (PEFT's
  format for peft and unsloth, mlx-lm's for mlx; Ollama imports both);
* ``Modelfile``: ``FROM <base>`` plus ``ADAPTER .``, for ``ollama create``;
* ``training_metadata.json``: inputs with hashes, settings, backend options, loss curve,
  held-out loss before and after, adapter size, timings.

Nothing here imports torch, transformers or mlx at module level: the Snakefile imports
``resolve_backend`` while it is read.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import write_json
from ragd_train.llm.backend import BACKENDS
from ragd_train.llm.base_models import ollama_base
from ragd_train.llm.lora_config import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    EVAL_EXAMPLES,
    LoraTrainingConfig,
    load_chat_records,
)
from ragd_train.llm.modelfile import modelfile_problems, modelfile_text
from ragd_train.ragd.hints import ollama_create_command, ragd_llm_hint
from ragd_train.staging import ensure_absent, staged_output

log = logging.getLogger("ragd_train")


def adapter_summary(folder: Path) -> dict[str, Any]:
    from safetensors import safe_open

    path = folder / ADAPTER_FILE
    with safe_open(str(path), framework="numpy") as handle:
        names = list(handle.keys())
        params = 0
        for name in names:
            shape = handle.get_slice(name).get_shape()
            params += math.prod(shape)
    return {"file": ADAPTER_FILE, "bytes": path.stat().st_size, "tensors": len(names), "parameters": params}


def train_lora(
    raft_path: str | Path,
    test_path: str | Path | None,
    output_dir: str | Path,
    cfg: LoraTrainingConfig,
    backend: str,
    *,
    threads: int = 1,
) -> dict[str, Any]:
    """Train into a hidden staging directory next to ``output_dir``; move it into place when complete."""
    start = time.monotonic()
    output_dir = Path(output_dir)
    ensure_absent(output_dir)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", field="llm.backend")
    from ragd_train.metadata import hash_inputs

    inputs = hash_inputs({"training_data": raft_path, "test_data": test_path})  # before training
    records = load_chat_records(raft_path)
    if not records:
        raise InputError("no RAFT training records", path=raft_path)
    test_records = load_chat_records(test_path)[:EVAL_EXAMPLES] if test_path else []
    if backend == "peft":
        from ragd_train.llm import peft_backend as module
    elif backend == "mlx":
        from ragd_train.llm import mlx_backend as module  # type: ignore[no-redef]
    else:
        from ragd_train.llm import unsloth_backend as module  # type: ignore[no-redef]

    with staged_output(output_dir) as staging:
        result = module.train(records, test_records, staging, cfg, threads=threads)
        for name in (ADAPTER_FILE, ADAPTER_CONFIG):
            if not (staging / name).exists():
                raise RagdTrainError(f"the {backend} backend wrote no {name}")
        from ragd_train.weights import verify_weights

        verify_weights(staging)  # never called ready with non-finite or unloadable weights
        modelfile = modelfile_text(cfg.base_model, backend, output_dir.name, result.get("architecture"))
        (staging / "Modelfile").write_text(modelfile)
        from ragd_train.metadata import base_metadata, gpu_peak_memory_mb, package_versions, peak_memory_mb

        meta = base_metadata("llm", inputs, cfg.model_dump(), cfg.seed)
        meta["versions"].update(package_versions(("mlx", "mlx-lm", "unsloth", "trl", "bitsandbytes", "gguf")))
        meta.update(
            {
                "backend": backend,
                "base_model": cfg.base_model,
                "ollama_base": ollama_base(cfg.base_model),
                **result,
                "adapter": adapter_summary(staging),
                "modelfile": "Modelfile",
                "ollama_create": ollama_create_command(output_dir),
                "wall_time_s": round(time.monotonic() - start, 2),
                "peak_memory_mb": peak_memory_mb(),
            }
        )
        meta.setdefault("gpu_peak_memory_mb", gpu_peak_memory_mb())  # unsloth reports its own
        write_json(staging / "training_metadata.json", meta)
        for problem in modelfile_problems(staging, meta["ollama_base"]):
            log.warning("ollama create would fail or mis-build: %s", problem)
    log.info(
        "saved %s (%s, %d adapter tensors, %.1f MB) in %.0fs",
        output_dir,
        backend,
        meta["adapter"]["tensors"],
        meta["adapter"]["bytes"] / 1e6,
        meta["wall_time_s"],
    )
    log.info("%s", ragd_llm_hint(output_dir))
    return meta
