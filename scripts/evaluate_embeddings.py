"""Rule script: A/B report of a fine-tuned embedding model against its base."""

from ragd_train.chat.connect import connect_judge
from ragd_train.evaluate.embeddings import evaluate_models, write_report
from ragd_train.progress import rule_log

with rule_log(snakemake):
    settings = snakemake.params.settings
    evaluation = settings["evaluation"]
    llm, note = connect_judge(settings)
    report = evaluate_models(
        snakemake.input.model,
        settings["embeddings"]["base_model"],
        snakemake.input.test,
        snakemake.input.snapshot,
        require_improvement=evaluation["require_improvement"],
        require_significant=evaluation["require_significant"],
        mode=evaluation["mode"],
        questions_path=snakemake.input.get("questions") or None,
        chat_path=snakemake.input.chat,
        strict_questions=snakemake.params.strict_questions,
        bootstrap_samples=evaluation["bootstrap_samples"],
        seed=settings["seed"],
        llm=llm,
        llm_note=note,
        ragas_llm_queries=evaluation["ragas_llm_queries"],
        ragas_llm_minutes=evaluation["ragas_llm_minutes"],
        precision=settings["encoding"]["precision"],
    )
    write_report(report, snakemake.output.json, snakemake.output.md, snakemake.output.png)
    print(report["summary"])
