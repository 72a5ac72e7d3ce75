rule evaluate_embeddings:
    input:
        model="models/{corpus}-embeddings",
        test="training_data/{corpus}/test.jsonl",
        snapshot=snapshot_of,
    output:
        json="reports/{corpus}-embeddings.json",
        md="reports/{corpus}-embeddings.md",
        png=report(
            "reports/{corpus}-embeddings.png",
            caption="../report/evaluation.rst",
            category="Evaluation",
        ),
    log:
        "logs/evaluate_embeddings/{corpus}.log",
    benchmark:
        "benchmarks/evaluate_embeddings/{corpus}.tsv"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        seed=config["seed"],
        base_model=config["training"]["embedding_base_model"],
        evaluation=section("evaluation"),
    script:
        "../scripts/evaluate_embeddings.py"
