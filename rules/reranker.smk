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
        settings=settings_of("train_reranker"),
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
        strict_questions=strict_questions,
        settings=settings_of("evaluate_reranker"),
    script:
        "../scripts/evaluate_reranker.py"
