"""Handing the adapter to Ollama and ragd: the Modelfile, the ``ollama create`` command, the hint."""

from __future__ import annotations

import logging
from pathlib import Path

from ragd_train.llm.base_models import ollama_base

log = logging.getLogger("ragd_train")


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
