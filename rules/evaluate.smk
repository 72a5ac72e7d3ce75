# Stage 5: each model against its base. One report per model: JSON (read by `ragd train evaluate`
# and `list`), Markdown, and for embeddings a plot; `snakemake --report` shows all three.
rule evaluate_embeddings:
    input:
        model="models/{corpus}-embeddings",
        test="training_data/{corpus}/test.jsonl",
        snapshot=snapshot_of,
        questions=questions_of,
        chat="training_data/{corpus}/chat_questions.jsonl",
    output:
        json="reports/{corpus}-embeddings.json",
        md="reports/{corpus}-embeddings.md",
        png=report(
            "reports/{corpus}-embeddings.png",
            caption="../report/embeddings.rst",
            category="Evaluation",
            subcategory="{corpus}",
        ),
    log:
        "logs/evaluate_embeddings/{corpus}.log",
    benchmark:
        "benchmarks/evaluate_embeddings/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=3000,
        runtime=60,
    params:
        strict_questions=strict_questions,
        settings=settings_of("evaluate_embeddings"),
    script:
        "../scripts/evaluate_embeddings.py"


rule evaluate_reranker:
    input:
        reranker="models/{corpus}-reranker",
        embeddings="models/{corpus}-embeddings",
        test="training_data/{corpus}/test.jsonl",
        snapshot=snapshot_of,
        questions=questions_of,
    output:
        json="reports/{corpus}-reranker.json",
        md=report(
            "reports/{corpus}-reranker.md",
            caption="../report/reranker.rst",
            category="Evaluation",
            subcategory="{corpus}",
        ),
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


# Base vs adapter answers on the held-out RAFT prompts and on the corpus's natural questions with
# ragd's search results (evaluation.llm_* settings).
rule evaluate_llm:
    input:
        model="models/{corpus}-llm",
        test="training_data/{corpus}/raft_test.jsonl",
        snapshot=snapshot_of,
        questions=questions_of,
    output:
        json="reports/{corpus}-llm.json",
        md=report(
            "reports/{corpus}-llm.md",
            caption="../report/llm.rst",
            category="Evaluation",
            subcategory="{corpus}",
        ),
    log:
        "logs/evaluate_llm/{corpus}.log",
    benchmark:
        "benchmarks/evaluate_llm/{corpus}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=settings_of("evaluate_llm"),
    script:
        "../scripts/evaluate_llm.py"
