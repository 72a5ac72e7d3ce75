"""Rule script: A/B report of a fine-tuned embedding model against its base."""

from ragd_train.evaluate.embeddings import connect_judge, evaluate_models, gate_message, write_report
from ragd_train.progress import rule_log

with rule_log(snakemake):
    settings = snakemake.config["evaluation"]
    llm, note = connect_judge(snakemake.config)
    report = evaluate_models(
        snakemake.input.model,
        snakemake.params.base_model,
        snakemake.input.test,
        snakemake.input.snapshot,
        require_improvement=settings["require_improvement"],
        require_significant=settings["require_significant"],
        mode=settings["mode"],
        questions_path=snakemake.input.get("questions") or None,
        strict_questions=snakemake.params.strict_questions,
        bootstrap_samples=settings["bootstrap_samples"],
        seed=snakemake.config["seed"],
        llm=llm,
        llm_note=note,
        ragas_llm_queries=settings["ragas_llm_queries"],
        ragas_llm_minutes=settings["ragas_llm_minutes"],
    )
    write_report(report, snakemake.output.json, snakemake.output.md, snakemake.output.png)
    print(gate_message(report))
