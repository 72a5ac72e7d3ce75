"""Handing the adapter to Ollama: the Modelfile (its ``ollama create`` command: ``ragd_train.ragd.hints``)
and a check of a Modelfile folder against what ``ollama create`` accepts.

Ollama's rules (docs/modelfile.md): ``FROM <model name>:<tag>`` names the base, and it must be the
base the adapter was trained on ("otherwise the behaviour will be erratic"); ``ADAPTER <path>``, an
absolute path or one relative to the Modelfile, is a safetensors adapter directory or a GGUF LoRA.
From a directory Ollama's client takes ``adapters.safetensors`` (else ``adapter_model.safetensors``)
and the ``*.json`` files, and converts the adapter only for a base of architecture ``llama`` or
``gemma2`` (its ``convert.ConvertAdapter``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from ragd_train.llm.base_models import ollama_base

log = logging.getLogger("ragd_train")

# general.architecture of the bases whose safetensors adapters `ollama create` converts
OLLAMA_ADAPTER_ARCHITECTURES = ("llama", "gemma2")
ADAPTER_FILES = ("adapters.safetensors", "adapter_model.safetensors")  # Ollama's order
COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)


def modelfile_text(base: str, backend: str, name: str, architecture: str | None = None) -> str:
    """An Ollama Modelfile: the base model plus this directory's adapter."""
    note = ""
    if architecture and architecture not in OLLAMA_ADAPTER_ARCHITECTURES:
        note = (
            f"# Note: the base's architecture is {architecture}; `ollama create` converts safetensors "
            f"adapters only for {', '.join(OLLAMA_ADAPTER_ARCHITECTURES)} bases.\n"
        )
    return (
        f"# ragd-train: RAFT LoRA adapter for ragd's chat model (backend {backend}).\n"
        f"# Create the Ollama model from this directory:  ollama create {name} -f Modelfile\n"
        f"{note}"
        f"FROM {ollama_base(base)}\n"
        "ADAPTER .\n"
    )


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """``(command, value)`` pairs, lower-case commands, comments and blank lines dropped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        command, _, value = line.partition(" ")
        out.append((command.lower(), value.strip()))
    return out


def modelfile_problems(folder: str | Path, base: str | None = None) -> list[str]:
    """What ``ollama create`` would reject or mis-build in ``folder/Modelfile`` (empty: none).
    ``base``: the Ollama model the adapter was trained on (the name the user chats with)."""
    folder = Path(folder)
    path = folder / "Modelfile"
    if not path.is_file():
        return [f"{path} is missing"]
    commands = parse_modelfile(path.read_text(encoding="utf-8"))
    problems = [f"unknown instruction {c.upper()}" for c, _ in commands if c not in COMMANDS]
    froms = [v for c, v in commands if c == "from"]
    adapters = [v for c, v in commands if c == "adapter"]
    if len(froms) != 1 or not commands or commands[0][0] != "from":
        problems.append(f"expected one FROM, first; got {len(froms)}")
    if base is not None and froms and froms[0] != base:
        problems.append(f"FROM {froms[0]} is not the base the adapter was trained on ({base})")
    if len(adapters) != 1:
        problems.append(f"expected one ADAPTER, got {len(adapters)}")
        return problems
    target = Path(adapters[0]).expanduser()
    target = target if target.is_absolute() else folder / target
    if target.is_file():
        if target.suffix != ".gguf" or target.read_bytes()[:4] != b"GGUF":
            problems.append(f"ADAPTER {adapters[0]}: a file adapter must be a GGUF LoRA")
        return problems
    if not target.is_dir():
        return [*problems, f"ADAPTER {adapters[0]}: {target} does not exist"]
    weights = next((target / n for n in ADAPTER_FILES if (target / n).is_file()), None)
    if weights is None:
        return [*problems, f"ADAPTER {adapters[0]}: no {' or '.join(ADAPTER_FILES)} in {target}"]
    if b"\0" not in weights.read_bytes()[:512]:  # Ollama sniffs application/octet-stream
        problems.append(f"{weights} does not look like safetensors")
    problems += _adapter_config_problems(target)
    problems += _tensor_name_problems(weights)
    meta_path = target / "training_metadata.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    arch = meta.get("architecture")
    if arch and arch not in OLLAMA_ADAPTER_ARCHITECTURES:
        problems.append(
            f"the base's architecture is {arch}: `ollama create` converts safetensors adapters only for "
            f"{', '.join(OLLAMA_ADAPTER_ARCHITECTURES)}"
        )
    return problems


def _adapter_config_problems(folder: Path) -> list[str]:
    config = folder / "adapter_config.json"
    if not config.is_file():
        return [f"{config} is missing (Ollama reads the rank and alpha there)"]
    data = json.loads(config.read_text())
    if not data.get("lora_alpha") and not (data.get("lora_parameters") or {}).get("scale"):
        return [f"{config} has no lora_alpha"]
    return []


# Ollama's llamaAdapter (convert/convert_llama_adapter.go): PEFT and mlx-lm names -> GGUF names,
# applied like Go's strings.NewReplacer (one pass; at each position the first pair that matches)
OLLAMA_ADAPTER_REPLACEMENTS = (
    ("base_model.model.", ""),
    ("model.layers", "blk"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.up_proj", "ffn_up"),
    ("lora_A.weight", "weight.lora_a"),
    ("lora_B.weight", "weight.lora_b"),
    ("lora_a", "weight.lora_a"),
    ("lora_b", "weight.lora_b"),
)
OLLAMA_ADAPTER_TENSOR = re.compile(
    r"blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_down|ffn_up)\.weight\.lora_[ab]"
)


def ollama_tensor_name(name: str) -> str:
    """The GGUF name Ollama gives an adapter tensor."""
    out, i = [], 0
    while i < len(name):
        for old, new in OLLAMA_ADAPTER_REPLACEMENTS:
            if name.startswith(old, i):
                out.append(new)
                i += len(old)
                break
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _tensor_name_problems(weights: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as handle:
        names = list(handle.keys())
    odd = [n for n in names if not OLLAMA_ADAPTER_TENSOR.fullmatch(ollama_tensor_name(n))]
    if odd:
        return [f"{weights}: {len(odd)} tensors Ollama's adapter converter does not map, e.g. {odd[0]}"]
    return []
