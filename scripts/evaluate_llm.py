"""Rule script: answer quality of the RAFT adapter against its base (RAFT test split, natural questions)."""

from ragd_train.evaluate.llm import evaluate_llm_target
from ragd_train.progress import rule_log

with rule_log(snakemake):
    evaluate_llm_target(
        snakemake.input.model,
        snakemake.input.test,
        snakemake.params.settings,
        snakemake.output.json,
        snakemake.output.md,
        questions_path=snakemake.input.get("questions") or None,
        snapshot_path=snakemake.input.snapshot,
    )
