rule train_embeddings:
    input:
        train="training_data/{corpus}/train.jsonl",
        dev="training_data/{corpus}/dev.jsonl",
        snapshot=snapshot_of,
    output:
        model=directory("models/{corpus}-embeddings"),
    log:
        "logs/train_embeddings/{corpus}.log",
    benchmark:
        "benchmarks/train_embeddings/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        settings=settings_of("train_embeddings"),
    script:
        "../scripts/train_embeddings.py"
