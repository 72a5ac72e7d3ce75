"""Rule script: A/B report of a fine-tuned embedding model against its base."""

from ragd_train.evaluation import evaluate_models, gate_message, write_report
from ragd_train.generate import connect_llm
from ragd_train.workflow import rule_log

with rule_log(snakemake):
    settings = snakemake.config["evaluation"]
    report = evaluate_models(
        snakemake.input.model,
        snakemake.params.base_model,
        snakemake.input.test,
        snakemake.input.snapshot,
        require_improvement=settings["require_improvement"],
        bootstrap_samples=settings["bootstrap_samples"],
        seed=snakemake.config["seed"],
        llm_available=connect_llm(snakemake.config) is not None,
    )
    write_report(report, snakemake.output.json, snakemake.output.md, snakemake.output.png)
    print(gate_message(report))
