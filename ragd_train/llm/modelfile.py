"""Handing the adapter to Ollama: the Modelfile (its ``ollama create`` command: ``ragd_train.ragd.hints``)."""

from __future__ import annotations

import logging

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
