"""Rule script: fine-tune the embedding model of one corpus."""

from ragd_train.embeddings import EmbeddingTrainingConfig, ragd_config_hint, train_embeddings
from ragd_train.ragd_config import index_folders
from ragd_train.workflow import rule_log

with rule_log(snakemake):
    meta = train_embeddings(
        snakemake.input.train,
        snakemake.output.model,
        EmbeddingTrainingConfig.from_workflow(snakemake.config),
        snapshot_path=snakemake.input.snapshot,
    )
    folders = index_folders(snakemake.input.snapshot, None)
    print(ragd_config_hint(snakemake.output.model, meta["output_dimension"], folders))
