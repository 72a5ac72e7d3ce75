"""The LoRA settings, the adapter's file names and the RAFT chat records every backend trains on."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator

from ragd_train.errors import InputError
from ragd_train.jsonl_io import read_jsonl
from ragd_train.ragd.config import FALLBACK_BASE, default_base_model  # noqa: F401 (read here too)
from ragd_train.settings import SEED_DEFAULT, LlmSettings

log = logging.getLogger("ragd_train")


ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_TARGETS = tuple(LlmSettings.model_fields["lora_target_modules"].default)
EVAL_EXAMPLES = 16  # held-out examples scored before and after training


class LoraTrainingConfig(LlmSettings):
    """The ``llm`` settings and the seed: everything that decides the adapter."""

    SECTION: ClassVar[str] = "llm"
    seed: int = SEED_DEFAULT

    @model_validator(mode="after")
    def _base_model(self) -> LoraTrainingConfig:
        if not self.base_model:
            self.base_model = default_base_model()
        return self


def plan_lora(
    cfg: LoraTrainingConfig, epoch_steps: int, step_time: float | None, batch: int
) -> dict[str, Any]:
    """The optimizer steps of a LoRA run (``ragd_train.training.plan_steps``): every epoch of the
    data unless ``llm.max_examples`` cuts it; ``llm.budget_minutes`` (off by default) cuts it further
    by ``step_time``, and then ``from_clock`` is true."""
    from ragd_train.training import TrainingBudget, plan_steps

    budget = TrainingBudget(
        epochs=cfg.epochs,
        minutes=cfg.budget_minutes,
        max_steps=None,
        prefix="llm.",
        max_examples=cfg.max_examples,
    )
    return plan_steps(budget, epoch_steps, step_time, batch)


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
