"""The LoRA settings, the adapter's file names and the RAFT chat records every backend trains on."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragd_train.errors import InputError
from ragd_train.jsonl_io import read_jsonl

log = logging.getLogger("ragd_train")


ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EVAL_EXAMPLES = 16  # held-out examples scored before and after training


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
