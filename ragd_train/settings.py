"""Which settings each rule reads: one table, applied once to the validated config.

Every rule passes its part as ``params: settings=settings_of("<rule>")`` (``rules/common.smk``), and its
script hands ``snakemake.params.settings`` to the package where a whole config used to go. So a rule
reruns when, and only when, a setting it reads changes, and no rule script reads
``snakemake.config``. The part keeps the config's shape (``{"seed": ..., "training": {...}}``), so
the package reads it as it reads a full config (the CLI's direct mode passes the full one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALL = None  # every key of the section
OLLAMA = ("host", "model", "temperature", "timeout", "retries", "backoff")

EMBEDDING_TRAINING = (
    "embedding_base_model",
    "embedding_epochs",
    "embedding_budget_minutes",
    "embedding_max_steps",
    "embedding_batch_size",
    "embedding_learning_rate",
    "embedding_warmup_ratio",
    "embedding_max_seq_length",
    "embedding_loss",
    "embedding_mini_batch_size",
    "embedding_hard_negatives",
    "matryoshka_dims",
)
RERANKER_TRAINING = (
    "kind",
    "base_model",
    "fallback_model",
    "loss",
    "epochs",
    "budget_minutes",
    "max_steps",
    "batch_size",
    "learning_rate",
    "warmup_ratio",
    "max_length",
    "negatives_per_query",
    "mini_batch_size",
)
LORA_TRAINING = (
    "llm_base_model",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "training_epochs",
    "llm_learning_rate",
    "llm_max_length",
    "llm_batch_size",
    "llm_max_cpu_hours",
)

# rule -> {section: keys it reads (ALL: the whole section)}; every rule also reads `seed`.
RULES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "generate_queries": {
        "training": ("query_generator", "nollm_strategies", "local_model", "queries_per_chunk"),
    },
    "build_training_data": {
        "training": ("query_generator", "hard_negatives_per_query", "quality_filter", "test_ratio"),
        "mining": ALL,
    },
    "train_embeddings": {"training": EMBEDDING_TRAINING},
    "evaluate_embeddings": {
        "training": ("embedding_base_model",),
        "evaluation": (
            "require_improvement",
            "require_significant",
            "mode",
            "bootstrap_samples",
            "llm_judge",
            "ragas_llm_queries",
            "ragas_llm_minutes",
        ),
    },
    "train_reranker": {"reranker": RERANKER_TRAINING},
    "evaluate_reranker": {
        "training": ("embedding_base_model",),
        "reranker": ("base_model", "fallback_model", "max_length", "candidates"),
        "evaluation": ("bootstrap_samples",),
    },
    "build_raft": {"training": ("raft_distractors", "raft_oracle_fraction", "raft_answers")},
    "train_lora": {"training": LORA_TRAINING},
    "evaluate_llm": {
        "evaluation": ("llm_max_new_tokens", "llm_max_examples", "bootstrap_samples", "llm_judge"),
    },
}


def ollama_keys(rule: str, config: Mapping[str, Any]) -> tuple[str, ...]:
    """The ``ollama`` settings a rule reads: none where the config keeps it from calling an LLM."""
    training, evaluation = config.get("training", {}), config.get("evaluation", {})
    generator = training.get("query_generator")
    if rule == "generate_queries":
        return () if generator == "nollm" else ("temperature",) if generator == "local" else OLLAMA
    if rule == "build_training_data":  # the LLM judge of the quality filter
        return OLLAMA if training.get("quality_filter") and generator != "nollm" else ()
    if rule == "build_raft":
        return () if training.get("raft_answers") == "extractive" else OLLAMA
    if rule in ("evaluate_embeddings", "evaluate_llm"):  # RAGAS's LLM metrics / the answer judge
        return OLLAMA if evaluation.get("llm_judge", True) else ()
    return ()


def rule_settings(config: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """The part of ``config`` that ``rule`` reads, in the config's own shape."""
    if rule not in RULES:
        raise KeyError(f"no settings are declared for rule {rule!r} (ragd_train/settings.py)")
    out: dict[str, Any] = {"seed": config["seed"]}
    sections = dict(RULES[rule])
    ollama = ollama_keys(rule, config)
    if ollama:
        sections["ollama"] = ollama
    for name, keys in sections.items():
        section = config[name]
        out[name] = dict(section) if keys is ALL else {k: section[k] for k in keys if k in section}
    return out
