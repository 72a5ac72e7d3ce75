"""Rule script: fine-tune the embedding model of one corpus."""

from ragd_train.embeddings.train import EmbeddingTrainingConfig, ragd_config_hint, train_embeddings
from ragd_train.progress import rule_log
from ragd_train.ragd.config import index_folders

with rule_log(snakemake):
    meta = train_embeddings(
        snakemake.input.train,
        snakemake.output.model,
        EmbeddingTrainingConfig.from_workflow(snakemake.params.settings),
        snapshot_path=snakemake.input.snapshot,
    )
    folders = index_folders(snakemake.input.snapshot, None)
    print(ragd_config_hint(snakemake.output.model, meta["output_dimension"], folders))
