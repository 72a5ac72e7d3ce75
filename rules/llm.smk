# RAFT training data and a LoRA adapter for ragd's chat model: models/{corpus}-llm.
# llm.backend picks the trainer; `auto` is resolved here, once, while the workflow is
# read: Apple Silicon -> mlx, an NVIDIA driver -> unsloth, otherwise peft (CPU). Each backend has
# its own rule (own conda env and resources); the ruleorder below lets the resolved backend's rule
# build the target. A Slurm login node usually has no GPU: set the backend explicitly there
# (`--config 'llm={backend: unsloth}'`). RAGD_TRAIN_PLATFORM=apple|cuda|cpu overrides detection.
from ragd_train.llm.backend import resolve_backend

LLM_BACKEND = resolve_backend(config["llm"]["backend"])


rule build_raft:
    input:
        train="training_data/{corpus}/train.jsonl",
        test="training_data/{corpus}/test.jsonl",
        snapshot=snapshot_of,
    output:
        raft="training_data/{corpus}/raft.jsonl",
        test="training_data/{corpus}/raft_test.jsonl",
        stats="training_data/{corpus}/raft_stats.json",
    log:
        "logs/build_raft/{corpus}.log",
    benchmark:
        "benchmarks/build_raft/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        settings=settings_of("build_raft"),
    script:
        "../scripts/build_raft.py"


# mlx-lm LoRA: Apple Silicon (MLX's CPU build elsewhere).
rule train_lora_mlx:
    input:
        raft="training_data/{corpus}/raft.jsonl",
        test="training_data/{corpus}/raft_test.jsonl",
    output:
        model=directory("models/{corpus}-llm"),
    log:
        "logs/train_lora_mlx/{corpus}.log",
    benchmark:
        "benchmarks/train_lora_mlx/{corpus}.tsv"
    conda:
        "../envs/mlx.yaml"
    threads: 4
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        backend="mlx",
        settings=settings_of("train_lora"),
    script:
        "../scripts/train_lora.py"


# Unsloth QLoRA on one NVIDIA GPU. The rule keeps the name `train_lora`, which profiles/slurm
# sends to the GPU partition.
rule train_lora:
    input:
        raft="training_data/{corpus}/raft.jsonl",
        test="training_data/{corpus}/raft_test.jsonl",
    output:
        model=directory("models/{corpus}-llm"),
    log:
        "logs/train_lora/{corpus}.log",
    benchmark:
        "benchmarks/train_lora/{corpus}.tsv"
    conda:
        "../envs/cuda.yaml"
    threads: 4
    resources:
        mem_mb=32000,
        runtime=120,
        gpu=1,
    params:
        backend="unsloth",
        settings=settings_of("train_lora"),
    script:
        "../scripts/train_lora.py"


# transformers + PEFT on CPU, for small bases; a hopeless run stops with guidance instead. An Ollama
# name is trained on the GGUF in Ollama's store when it is there.
rule train_lora_peft:
    input:
        raft="training_data/{corpus}/raft.jsonl",
        test="training_data/{corpus}/raft_test.jsonl",
    output:
        model=directory("models/{corpus}-llm"),
    log:
        "logs/train_lora_peft/{corpus}.log",
    benchmark:
        "benchmarks/train_lora_peft/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=480,
    params:
        backend="peft",
        settings=settings_of("train_lora"),
        base_digest=ollama_base_digest,
    script:
        "../scripts/train_lora.py"


if LLM_BACKEND == "mlx":

    ruleorder: train_lora_mlx > train_lora > train_lora_peft

elif LLM_BACKEND == "unsloth":

    ruleorder: train_lora > train_lora_mlx > train_lora_peft

else:

    ruleorder: train_lora_peft > train_lora_mlx > train_lora
