"""Rule script: fine-tune the reranker of one corpus."""

from ragd_train.reranker import RerankerTrainingConfig, ragd_reranker_hint, train_reranker
from ragd_train.workflow import rule_log

with rule_log(snakemake):
    train_reranker(
        snakemake.input.train,
        snakemake.output.model,
        RerankerTrainingConfig.from_workflow(snakemake.config),
        snapshot_path=snakemake.input.snapshot,
    )
    print(ragd_reranker_hint(snakemake.output.model))
