rule generate_queries:
    input:
        snapshot=snapshot_of,
    output:
        queries="training_data/{corpus}/queries.jsonl",
        stats="training_data/{corpus}/generation_stats.json",
    log:
        "logs/generate_queries/{corpus}.log",
    benchmark:
        "benchmarks/generate_queries/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        seed=config["seed"],
        training=section(
            "training",
            "query_generator",
            "nollm_strategies",
            "local_model",
            "queries_per_chunk",
        ),
        ollama=section("ollama", "host", "model", "temperature"),
    script:
        "../scripts/generate_queries.py"


rule build_training_data:
    input:
        snapshot=snapshot_of,
        queries="training_data/{corpus}/queries.jsonl",
        generation_stats="training_data/{corpus}/generation_stats.json",
    output:
        train="training_data/{corpus}/train.jsonl",
        test="training_data/{corpus}/test.jsonl",
        stats="training_data/{corpus}/stats.json",
    log:
        "logs/build_training_data/{corpus}.log",
    benchmark:
        "benchmarks/build_training_data/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        seed=config["seed"],
        mining=section("mining"),
        training=section(
            "training", "hard_negatives_per_query", "quality_filter", "test_ratio"
        ),
    script:
        "../scripts/build_training_data.py"
