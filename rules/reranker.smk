rule train_reranker:
    input:
        train="training_data/{corpus}/train.jsonl",
        snapshot=snapshot_of,
    output:
        model=directory("models/{corpus}-reranker"),
    log:
        "logs/train_reranker/{corpus}.log",
    benchmark:
        "benchmarks/train_reranker/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        seed=config["seed"],
        reranker=section(
            "reranker",
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
        ),
    script:
        "../scripts/train_reranker.py"


rule evaluate_reranker:
    input:
        reranker="models/{corpus}-reranker",
        embeddings="models/{corpus}-embeddings",
        test="training_data/{corpus}/test.jsonl",
        snapshot=snapshot_of,
        questions=questions_of,
    output:
        json="reports/{corpus}-reranker.json",
        md="reports/{corpus}-reranker.md",
    log:
        "logs/evaluate_reranker/{corpus}.log",
    benchmark:
        "benchmarks/evaluate_reranker/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        seed=config["seed"],
        strict_questions=strict_questions,
        embedding_base=config["training"]["embedding_base_model"],
        reranker=section(
            "reranker", "base_model", "fallback_model", "max_length", "candidates"
        ),
        bootstrap_samples=config["evaluation"]["bootstrap_samples"],
    script:
        "../scripts/evaluate_reranker.py"
