"""Into Ollama and ragd: the Modelfile against Ollama's rules (``FROM`` the base the user chats with,
then ``ADAPTER`` a safetensors adapter directory Ollama's client reads, for a base architecture its
converter takes), and the printed ragd command, run through ragd's own CLI, switching llm.model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from helpers import need_ragd
from ragd_home import ragd_env, run_ragd

from ragd_train.llm.modelfile import modelfile_problems, modelfile_text, parse_modelfile
from ragd_train.ragd.hints import ragd_llm_hint


def adapter_folder(folder: Path, base: str, architecture: str | None = "llama") -> Path:
    """A model folder as train_lora leaves it (a tiny safetensors adapter, PEFT's config)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file(
        {name.format("A"): torch.zeros(2, 8), name.format("B"): torch.zeros(8, 2)},
        folder / "adapters.safetensors",
    )
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4, "peft_type": "LORA"}))
    (folder / "training_metadata.json").write_text(
        json.dumps({"ollama_base": base, "architecture": architecture})
    )
    (folder / "Modelfile").write_text(modelfile_text(base, "peft", folder.name, architecture))
    return folder


def test_the_modelfile_follows_ollamas_rules(tmp_path: Path) -> None:
    folder = adapter_folder(tmp_path / "demo-llm", "llama3.2:3b")
    commands = parse_modelfile((folder / "Modelfile").read_text())
    assert commands == [("from", "llama3.2:3b"), ("adapter", ".")]  # FROM <model>:<tag>, then ADAPTER
    assert modelfile_problems(folder, "llama3.2:3b") == []
    # an adapter trained on another base, a missing adapter, an architecture Ollama cannot convert
    assert "not the base the adapter was trained on" in " ".join(modelfile_problems(folder, "qwen2.5:3b"))
    (folder / "adapters.safetensors").rename(folder / "elsewhere.safetensors")
    assert "no adapters.safetensors or adapter_model.safetensors" in " ".join(modelfile_problems(folder))
    (folder / "elsewhere.safetensors").rename(folder / "adapters.safetensors")
    # every tensor maps to a GGUF LoRA name by Ollama's converter's replacements (PEFT and mlx-lm)
    from ragd_train.llm.modelfile import ollama_tensor_name

    peft = "base_model.model.model.layers.11.mlp.down_proj.lora_B.weight"
    assert ollama_tensor_name(peft) == "blk.11.ffn_down.weight.lora_b"
    assert ollama_tensor_name("model.layers.0.self_attn.q_proj.lora_a") == "blk.0.attn_q.weight.lora_a"
    import torch
    from safetensors.torch import save_file

    save_file(
        {"base_model.model.model.embed_tokens.lora_A.weight": torch.zeros(2, 8)},
        folder / "adapters.safetensors",
    )
    assert any("does not map" in p and "embed_tokens" in p for p in modelfile_problems(folder))
    qwen = adapter_folder(tmp_path / "qwen-llm", "qwen2.5:3b", "qwen2")
    assert "# Note: the base's architecture is qwen2" in (qwen / "Modelfile").read_text()
    assert any("architecture is qwen2" in p for p in modelfile_problems(qwen, "qwen2.5:3b"))
    (qwen / "Modelfile").write_text("FROM qwen2.5:3b\nADAPTER ./missing\n")
    assert any("does not exist" in p for p in modelfile_problems(qwen))
    (qwen / "Modelfile").write_text("ADAPTER .\n")
    assert any("one FROM" in p for p in modelfile_problems(qwen))


def test_the_printed_ragd_command_switches_ragds_chat_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_ragd()
    from ragd_train.ragd.config import read_ragd_settings

    folder = adapter_folder(tmp_path / "models" / "demo-llm", "smollm2:135m")
    hint = ragd_llm_hint(folder)
    assert f"cd {folder.resolve()} && ollama create demo-llm -f Modelfile" in hint
    command = next(line.strip() for line in hint.splitlines() if line.strip().startswith("ragd models set"))
    assert command == "ragd models set --chat demo-llm"
    home = tmp_path / "home"
    (home / ".ragd").mkdir(parents=True)
    (home / ".ragd" / "config.yaml").write_text("llm:\n  model: smollm2:135m\n")
    run_ragd(shlex.split(command)[1:], ragd_env(home))  # no Ollama here: ragd warns, sets it unverified
    monkeypatch.setenv("HOME", str(home))
    assert read_ragd_settings()["llm.model"] == "demo-llm"


@pytest.mark.parametrize("name", ["demo-llm", "scifact.v2-llm"])
def test_the_ollama_model_name_is_one_ollama_accepts(name: str, tmp_path: Path) -> None:
    """`ollama create NAME`: letters, digits, '_', '-', '.' (the folder name, lower-cased corpora)."""
    import re

    folder = adapter_folder(tmp_path / name, "llama3.2:3b")
    created = ragd_llm_hint(folder).split("ollama create ", 1)[1].split()[0]
    assert created == name and re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*", created)
