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
        settings=settings_of("generate_queries"),
    script:
        "../scripts/generate_queries.py"


rule build_training_data:
    input:
        snapshot=snapshot_of,
        queries="training_data/{corpus}/queries.jsonl",
        generation_stats="training_data/{corpus}/generation_stats.json",
        chat_history=chat_history_files,
    output:
        train="training_data/{corpus}/train.jsonl",
        dev="training_data/{corpus}/dev.jsonl",
        test="training_data/{corpus}/test.jsonl",
        chat="training_data/{corpus}/chat_questions.jsonl",
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
        chat_history=chat_history_dir,
        settings=settings_of("build_training_data"),
    script:
        "../scripts/build_training_data.py"
