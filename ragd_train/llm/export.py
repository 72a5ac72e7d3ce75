"""Adapters out of the workspace: PEFT layout for Ollama (`ADAPTER`), and fusing into the base weights.

Every backend's adapter becomes a standard PEFT adapter (``adapter_model.safetensors`` +
``adapter_config.json``), the layout ``ollama create`` imports with ``ADAPTER``:

* peft and unsloth adapters already are PEFT LoRA weights (only the file name changes);
* an mlx-lm adapter stores ``lora_a`` (in x r) and ``lora_b`` (r x out) per layer with
  ``scale = alpha / r``; PEFT stores ``lora_A.weight`` (r x in) and ``lora_B.weight`` (out x r)
  scaled by ``lora_alpha / r``: the matrices are transposed and ``lora_alpha = scale * r``.

``fuse`` merges the adapter into the base model (transformers + PEFT ``merge_and_unload``) and saves
a plain Hugging Face model (safetensors) that needs no adapter at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.base_models import resolve_weights
from ragd_train.llm.lora_config import ADAPTER_CONFIG, ADAPTER_FILE
from ragd_train.llm.modelfile import modelfile_text
from ragd_train.metadata import METADATA_FILE, TrainingMetadata, read_metadata
from ragd_train.staging import staged_output

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def _metadata(model_dir: Path) -> TrainingMetadata:
    if not (model_dir / ADAPTER_FILE).exists() or not (model_dir / METADATA_FILE).exists():
        raise RagdTrainError(f"{model_dir} is not a LoRA adapter made by ragd-train (no {ADAPTER_FILE})")
    return read_metadata(model_dir, need=("backend", "base_model"))


def mlx_to_peft(model_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """An mlx-lm adapter's tensors and config, rewritten as a PEFT LoRA adapter."""
    from safetensors.torch import load_file

    config = json.loads((model_dir / ADAPTER_CONFIG).read_text())
    params = config["lora_parameters"]
    rank, scale = int(params["rank"]), float(params["scale"])
    state = {}
    for name, tensor in load_file(str(model_dir / ADAPTER_FILE)).items():
        stem, _, kind = name.rpartition(".")
        if kind not in ("lora_a", "lora_b"):
            raise RagdTrainError(
                f"{model_dir / ADAPTER_FILE}: unexpected tensor {name!r} in an mlx LoRA adapter"
            )
        peft_name = f"{PEFT_PREFIX}{stem}.lora_{kind[-1].upper()}.weight"
        state[peft_name] = tensor.T.contiguous()
    targets = sorted({n.rsplit(".", 3)[-3] for n in state})
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": 0.0,
        "target_modules": targets,
        "bias": "none",
        "base_model_name_or_path": config.get("model"),
    }
    return state, peft_config


def write_peft_adapter(model_dir: str | Path, dest: Path, *, weights_name: str = PEFT_WEIGHTS) -> str:
    """Write ``model_dir``'s adapter into ``dest`` in PEFT's layout; return the training backend."""
    model_dir = Path(model_dir)
    backend = _metadata(model_dir).backend
    dest.mkdir(parents=True, exist_ok=True)
    if backend == "mlx":
        from safetensors.torch import save_file

        state, config = mlx_to_peft(model_dir)
        save_file(state, str(dest / weights_name), metadata={"format": "pt"})
        (dest / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    else:
        shutil.copyfile(model_dir / ADAPTER_FILE, dest / weights_name)
        shutil.copyfile(model_dir / ADAPTER_CONFIG, dest / ADAPTER_CONFIG)
    return backend


def export_ollama(model_dir: str | Path, dest: str | Path) -> Path:
    """A folder that ``ollama create NAME -f Modelfile`` imports: PEFT adapter + Modelfile."""
    model_dir, dest = Path(model_dir), Path(dest)
    meta = _metadata(model_dir)
    with staged_output(dest) as staging:
        backend = write_peft_adapter(model_dir, staging)
        architecture = getattr(meta, "architecture", None)  # recorded since #27
        (staging / "Modelfile").write_text(modelfile_text(meta.base_model, backend, dest.name, architecture))
        shutil.copyfile(model_dir / METADATA_FILE, staging / METADATA_FILE)
    return dest


def fuse(model_dir: str | Path, dest: str | Path) -> Path:
    """Merge the adapter into its base; save a plain Hugging Face model (safetensors) at ``dest``."""
    from ragd_train.llm.torch_lora import load_adapter, load_base
    from ragd_train.metadata import base_metadata

    model_dir, dest = Path(model_dir), Path(dest)
    meta = _metadata(model_dir)
    if meta.backend == "unsloth":
        raise RagdTrainError(
            f"{model_dir}: an Unsloth adapter sits on a 4-bit base; fuse it on the GPU with Unsloth's "
            "save_pretrained_merged, or export it with --format ollama"
        )
    weights = resolve_weights(meta.base_model, "peft")
    model, tokenizer = load_base(weights)
    with tempfile.TemporaryDirectory() as tmp:
        write_peft_adapter(model_dir, Path(tmp), weights_name=ADAPTER_FILE)
        model = load_adapter(model, tmp)
    merged = model.merge_and_unload()
    with staged_output(dest) as staging:
        merged.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        fused = base_metadata("llm-fused", {"adapter": model_dir / ADAPTER_FILE}, meta.config, meta.seed)
        fused.update(
            {"base_model": meta.base_model, "base_model_path": str(weights), "fused_from": str(model_dir)}
        )
        (staging / METADATA_FILE).write_text(json.dumps(fused, indent=2) + "\n")
    return dest
