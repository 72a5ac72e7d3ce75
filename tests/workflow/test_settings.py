"""One path for settings: rules pass what they read as params; scripts read only params/input/output."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from ragd_train.config import load_config
from ragd_train.embeddings.train import EmbeddingTrainingConfig
from ragd_train.llm.lora_config import LoraTrainingConfig
from ragd_train.reranker.train import RerankerTrainingConfig
from ragd_train.settings import RULES, rule_settings

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
    config["training"].update(
        embedding_base_model="some/base",
        embedding_epochs=3,
        embedding_budget_minutes=4.5,
        embedding_max_steps=11,
        embedding_batch_size=12,
        embedding_learning_rate=3e-4,
        embedding_warmup_ratio=0.3,
        embedding_max_seq_length=64,
        embedding_loss="cached_mnrl",
        embedding_mini_batch_size=5,
        embedding_hard_negatives=2,
        matryoshka_dims=[32, 16],
        llm_base_model="some/llm",
        lora_rank=4,
        lora_alpha=9,
        lora_dropout=0.2,
        lora_target_modules=["q_proj"],
        training_epochs=5,
        llm_learning_rate=1e-3,
        llm_max_length=333,
        llm_batch_size=3,
        llm_max_cpu_hours=0.5,
    )
    config["reranker"].update(
        kind="colbert",
        base_model="some/reranker",
        fallback_model="some/fallback",
        loss="lambda",
        epochs=4,
        budget_minutes=2.5,
        max_steps=9,
        batch_size=6,
        learning_rate=5e-5,
        warmup_ratio=0.2,
        max_length=99,
        negatives_per_query=2,
        mini_batch_size=3,
    )
    return config


@pytest.mark.parametrize(
    ("rule", "cls"),
    [
        ("train_embeddings", EmbeddingTrainingConfig),
        ("train_reranker", RerankerTrainingConfig),
        ("train_lora", LoraTrainingConfig),
    ],
)
def test_a_training_rule_builds_the_same_settings_from_its_params_as_from_the_whole_config(
    rule: str, cls: type
) -> None:
    config = varied_config()
    full = cls.from_workflow(config)
    defaults = cls()
    assert all(getattr(full, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(cls)), (
        "each field must be moved off its default, or a missing key would go unnoticed"
    )
    assert cls.from_workflow(rule_settings(config, rule)) == full


def test_ollama_settings_reach_only_rules_that_call_an_llm() -> None:
    config = load_config()
    config["ollama"].update(host="http://127.0.0.1:1", model="m")
    config["training"]["query_generator"] = "nollm"
    assert "ollama" not in rule_settings(config, "generate_queries")
    assert "ollama" not in rule_settings(config, "build_training_data")
    config["training"]["query_generator"] = "local"
    temperature = config["ollama"]["temperature"]
    assert rule_settings(config, "generate_queries")["ollama"] == {"temperature": temperature}
    config["training"]["query_generator"] = "auto"
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
    assert set(rule_settings(config, "train_embeddings")) == {"seed", "training"}
    with pytest.raises(KeyError, match="no settings are declared"):
        rule_settings(config, "no_such_rule")
