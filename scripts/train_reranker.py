"""Rule script: fine-tune the reranker of one corpus."""

from ragd_train.progress import rule_log
from ragd_train.ragd.hints import ragd_reranker_hint
from ragd_train.reranker.train import RerankerTrainingConfig, train_reranker
from ragd_train.settings import bind

with rule_log(snakemake):
    train_reranker(
        snakemake.input.train,
        snakemake.output.model,
        bind(RerankerTrainingConfig, snakemake.params.settings),
        snapshot_path=snakemake.input.snapshot,
    )
    print(ragd_reranker_hint(snakemake.output.model))
