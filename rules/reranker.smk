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
