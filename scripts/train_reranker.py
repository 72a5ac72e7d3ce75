"""Rule script: fine-tune the reranker of one corpus."""

from ragd_train.progress import rule_log
from ragd_train.reranker.scoring import ragd_reranker_hint
from ragd_train.reranker.train import RerankerTrainingConfig, train_reranker

with rule_log(snakemake):
    train_reranker(
        snakemake.input.train,
        snakemake.output.model,
        RerankerTrainingConfig.from_workflow(snakemake.params.settings),
        snapshot_path=snakemake.input.snapshot,
    )
    print(ragd_reranker_hint(snakemake.output.model))
