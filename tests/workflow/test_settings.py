"""One path for settings: rules pass what they read as params; scripts read only params/input/output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragd_train.config import load_config
from ragd_train.embeddings.train import EmbeddingTrainingConfig
from ragd_train.llm.lora_config import LoraTrainingConfig
from ragd_train.llm.raft import RaftConfig
from ragd_train.reranker.train import RerankerTrainingConfig
from ragd_train.settings import (
    RULES,
    Settings,
    all_settings,
    bind,
    commands,
    flags_of,
    readers,
    reference_text,
    rule_keys,
    rule_settings,
    schema_text,
)

ROOT = Path(__file__).resolve().parents[2]
RULE = re.compile(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", re.S | re.M)


def rule_blocks() -> dict[str, str]:
    blocks = {}
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        blocks.update(dict(RULE.findall(smk.read_text())))
    return blocks


def test_every_script_rule_takes_its_settings_from_the_table() -> None:
    blocks = rule_blocks()
    scripted = {name: body for name, body in blocks.items() if "script:" in body}
    assert len(scripted) >= 11
    for name, body in scripted.items():
        table = "train_lora" if name.startswith("train_lora") else name
        assert f'settings=settings_of("{table}")' in body, name
        assert table in RULES, name
        assert "config[" not in body, f"rule {name} reads the config outside its settings"


def test_no_rule_script_reads_the_config() -> None:
    for script in sorted((ROOT / "scripts").glob("*.py")):
        text = script.read_text()
        assert "snakemake.config" not in text, script.name
        assert "snakemake.params.settings" in text, script.name


def varied_config() -> dict:
    """The shipped config with every setting the training rules read moved off its default."""
    config = load_config()
    config["seed"] = 7
    config["embeddings"].update(
        base_model="some/base",
        epochs=3,
        budget_minutes=4.5,
        max_examples=640,
        max_steps=11,
        batch_size=12,
        learning_rate=3e-4,
        warmup_ratio=0.3,
        max_seq_length=64,
        loss="cached_mnrl",
        mini_batch_size=5,
        hard_negatives=2,
        matryoshka_dims=[32, 16],
        precision="fp32",
        interpolation=[0.0, 1.0],
        dev_corpus=50,
    )
    config["llm"].update(
        backend="peft",
        base_model="some/llm",
        lora_rank=4,
        lora_alpha=9,
        lora_dropout=0.2,
        lora_target_modules=["q_proj"],
        epochs=5,
        learning_rate=5e-4,
        max_length=333,
        batch_size=3,
        micro_batch_size=2,
        gradient_checkpointing=True,
        precision="fp32",
        max_examples=12,
        budget_minutes=2.5,
        max_cpu_hours=0.5,
    )
    config["reranker"].update(
        kind="colbert",
        base_model="some/reranker",
        fallback_model="some/fallback",
        loss="lambda",
        epochs=4,
        budget_minutes=2.5,
        max_examples=64,
        max_steps=9,
        batch_size=6,
        learning_rate=5e-5,
        warmup_ratio=0.2,
        max_length=99,
        negatives_per_query=2,
        mini_batch_size=3,
        candidates=7,
    )
    config["raft"].update(distractors=2, oracle_fraction=0.5, answers="extractive")
    return config


@pytest.mark.parametrize(
    ("rule", "cls"),
    [
        ("train_embeddings", EmbeddingTrainingConfig),
        ("train_reranker", RerankerTrainingConfig),
        ("train_lora", LoraTrainingConfig),
        ("build_raft", RaftConfig),
    ],
)
def test_a_training_rule_builds_the_same_settings_from_its_params_as_from_the_whole_config(
    rule: str, cls: type
) -> None:
    config = varied_config()
    full = bind(cls, config)
    defaults = cls()
    read = set(rule_keys(rule)[cls.SECTION])
    for name in read | {"seed"}:
        assert getattr(full, name) != getattr(defaults, name), (
            f"{name} must be moved off its default, or a missing key would go unnoticed"
        )
    part = bind(cls, rule_settings(config, rule))
    assert {n: getattr(part, n) for n in read | {"seed"}} == {n: getattr(full, n) for n in read | {"seed"}}


def test_every_setting_is_declared_once_with_its_readers() -> None:
    """The one table: every setting, its type and default, and the rules that read it."""
    table = {name: readers(name) for name in all_settings()}
    assert len(table) == len(set(table)) >= 70
    rules = set(RULES) | {"workflow"}
    for name, who in table.items():
        assert who, f"{name} is read by no rule"
        assert set(who) <= rules, name
        field = all_settings()[name]
        assert field.description, f"{name} has no help"
    # the table is what the rules' params carry: a rule's part holds exactly the settings naming it
    config = load_config()
    for rule in RULES:
        part = rule_settings(config, rule)
        carried = {f"{s}.{k}" for s, keys in part.items() if isinstance(keys, dict) for k in keys}
        declared = {n for n, who in table.items() if rule in who and not n.startswith("ollama.")} - {"seed"}
        assert carried - {c for c in carried if c.startswith("ollama.")} == declared, rule
        assert part["seed"] == config["seed"]
    assert readers("llm.backend") == ("workflow",)
    assert readers("embeddings.base_model") == (
        "train_embeddings",
        "evaluate_embeddings",
        "evaluate_reranker",
        "evaluate_llm",  # ragd's search for the natural questions the chat models answer
    )


def test_the_checked_in_schema_and_reference_are_generated_from_the_settings() -> None:
    assert (ROOT / "config" / "schema.yaml").read_text() == schema_text(), (
        "config/schema.yaml is out of date: run `python -m ragd_train.settings`"
    )
    assert (ROOT / "docs" / "settings.md").read_text() == reference_text(), (
        "docs/settings.md is out of date: run `python -m ragd_train.settings`"
    )


def test_the_schema_and_the_models_agree_on_every_default() -> None:
    """A config with nothing set, filled by the schema, equals the models' own defaults."""
    config = load_config()
    typed = Settings.model_validate(config)
    for name in all_settings():
        section, _, key = name.partition(".")
        if name in ("seed", "llm.base_model") or section == "ollama" and key in ("host", "model"):
            continue  # unset = ragd's own settings (ragd's llm.model for llm.base_model)
        assert config[section][key] == getattr(getattr(typed, section), key), name
        assert config[section][key] == all_settings()[name].default, name


def test_every_flag_sets_a_declared_setting() -> None:
    flags = {c: flags_of(c) for c in commands()}
    assert set(flags) == {"generate-data", "embeddings", "reranker", "llm", "evaluate"}
    assert flags["llm"]["epochs"][0] == "llm.epochs"
    assert flags["embeddings"]["epochs"][0] == "embeddings.epochs"
    assert flags["reranker"]["negatives"][0] == "reranker.negatives_per_query"
    assert flags["generate-data"]["negatives"][0] == "generate.hard_negatives_per_query"


def test_ollama_settings_reach_only_rules_that_call_an_llm() -> None:
    config = load_config()
    config["ollama"].update(host="http://127.0.0.1:1", model="m")
    config["generate"]["query_generator"] = "nollm"
    assert "ollama" not in rule_settings(config, "generate_queries")
    assert "ollama" not in rule_settings(config, "build_training_data")
    config["generate"]["query_generator"] = "local"
    temperature = config["ollama"]["temperature"]
    assert rule_settings(config, "generate_queries")["ollama"] == {"temperature": temperature}
    config["generate"]["query_generator"] = "auto"
    assert rule_settings(config, "build_training_data")["ollama"]["model"] == "m"
    config["evaluation"]["llm_judge"] = False
    assert "ollama" not in rule_settings(config, "evaluate_embeddings")
    assert "ollama" not in rule_settings(config, "evaluate_llm")
    config["evaluation"]["llm_judge"] = True
    assert set(rule_settings(config, "evaluate_llm")["ollama"]) == {
        "host",
        "model",
        "temperature",
        "timeout",
        "retries",
        "backoff",
    }
    config["raft"]["answers"] = "extractive"
    assert "ollama" not in rule_settings(config, "build_raft")
    assert set(rule_settings(config, "train_embeddings")) == {"seed", "embeddings", "encoding"}
    with pytest.raises(KeyError, match="no settings are declared"):
        rule_settings(config, "no_such_rule")


# Every setting, once, with the rules that read it (``ollama.*``: the rules that may call an LLM; each
# reads them only when its config lets it call one). A change here is a change of which rules rerun
# when the setting changes: update the table on purpose.
READERS = {
    "seed": "ALL",
    "generate.query_generator": "generate_queries build_training_data",
    "generate.nollm_strategies": "generate_queries",
    "generate.local_model": "generate_queries",
    "generate.queries_per_chunk": "generate_queries",
    "generate.hard_negatives_per_query": "build_training_data",
    "generate.quality_filter": "build_training_data",
    "generate.test_ratio": "generate_queries build_training_data",
    "generate.dev_ratio": "generate_queries build_training_data",
    "generate.chat_eval_share": "build_training_data",
    "generate.chat_pairs": "build_training_data",
    "generate.heldout_strategies": "generate_queries",
    "mining.model": "build_training_data",
    "mining.candidates": "build_training_data",
    "mining.bm25_weight": "build_training_data",
    "mining.relative_margin": "build_training_data",
    "mining.exclude_same_document": "build_training_data",
    "mining.batch_size": "build_training_data",
    "mining.teacher_pairs": "build_training_data",
    "mining.teacher_bm25_share": "build_training_data",
    "mining.roundtrip_top_k": "build_training_data",
    "mining.judge_min_score": "build_training_data",
    "embeddings.base_model": "train_embeddings evaluate_embeddings evaluate_reranker evaluate_llm",
    "embeddings.epochs": "train_embeddings",
    "embeddings.batch_size": "train_embeddings",
    "embeddings.learning_rate": "train_embeddings",
    "embeddings.warmup_ratio": "train_embeddings",
    "embeddings.max_seq_length": "train_embeddings",
    "embeddings.max_examples": "train_embeddings",
    "embeddings.budget_minutes": "train_embeddings",
    "embeddings.max_steps": "train_embeddings",
    "embeddings.precision": "train_embeddings",
    "embeddings.interpolation": "train_embeddings",
    "embeddings.dev_corpus": "train_embeddings",
    "embeddings.loss": "train_embeddings",
    "embeddings.mini_batch_size": "train_embeddings",
    "embeddings.hard_negatives": "train_embeddings",
    "embeddings.matryoshka_dims": "train_embeddings",
    "reranker.kind": "train_reranker",
    "reranker.base_model": "train_reranker evaluate_reranker",
    "reranker.fallback_model": "train_reranker evaluate_reranker",
    "reranker.loss": "train_reranker",
    "reranker.epochs": "train_reranker",
    "reranker.batch_size": "train_reranker",
    "reranker.learning_rate": "train_reranker",
    "reranker.warmup_ratio": "train_reranker",
    "reranker.max_length": "train_reranker evaluate_reranker",
    "reranker.negatives_per_query": "train_reranker",
    "reranker.mini_batch_size": "train_reranker",
    "reranker.max_examples": "train_reranker",
    "reranker.budget_minutes": "train_reranker",
    "reranker.max_steps": "train_reranker",
    "reranker.candidates": "evaluate_reranker",
    "raft.distractors": "build_raft",
    "raft.oracle_fraction": "build_raft",
    "raft.answers": "build_raft",
    "llm.backend": "workflow",
    "llm.base_model": "train_lora",
    "llm.lora_rank": "train_lora",
    "llm.lora_alpha": "train_lora",
    "llm.lora_dropout": "train_lora",
    "llm.lora_target_modules": "train_lora",
    "llm.epochs": "train_lora",
    "llm.learning_rate": "train_lora",
    "llm.max_length": "train_lora",
    "llm.batch_size": "train_lora",
    "llm.micro_batch_size": "train_lora",
    "llm.gradient_checkpointing": "train_lora",
    "llm.precision": "train_lora evaluate_llm",
    "llm.max_cpu_hours": "train_lora",
    "llm.max_examples": "train_lora",
    "llm.budget_minutes": "train_lora",
    "evaluation.require_improvement": "evaluate_embeddings",
    "evaluation.require_significant": "evaluate_embeddings",
    "evaluation.mode": "evaluate_embeddings",
    "evaluation.bootstrap_samples": "evaluate_embeddings evaluate_reranker evaluate_llm",
    "evaluation.llm_max_examples": "evaluate_llm",
    "evaluation.llm_max_new_tokens": "evaluate_llm",
    "evaluation.llm_questions": "evaluate_llm",
    "evaluation.llm_context_chunks": "evaluate_llm",
    "evaluation.llm_batch_size": "evaluate_llm",
    "evaluation.llm_judge": "evaluate_embeddings evaluate_llm",
    "evaluation.ragas_llm_queries": "evaluate_embeddings",
    "evaluation.ragas_llm_minutes": "evaluate_embeddings",
    "encoding.precision": (
        "build_training_data train_embeddings evaluate_embeddings evaluate_reranker evaluate_llm"
    ),
    "ollama.host": "generate_queries build_training_data build_raft evaluate_embeddings evaluate_llm",
    "ollama.model": "generate_queries build_training_data build_raft evaluate_embeddings evaluate_llm",
    "ollama.temperature": "generate_queries build_training_data build_raft evaluate_embeddings evaluate_llm",
    "ollama.timeout": "generate_queries build_training_data build_raft evaluate_embeddings evaluate_llm",
    "ollama.retries": "generate_queries build_training_data build_raft evaluate_embeddings evaluate_llm",
    "ollama.backoff": "generate_queries build_training_data build_raft evaluate_embeddings evaluate_llm",
}


def test_every_setting_is_listed_once_with_the_rules_that_read_it() -> None:
    declared = {
        name: "ALL" if set(readers(name)) == set(RULES) else " ".join(readers(name))
        for name in all_settings()
    }
    assert declared == READERS
