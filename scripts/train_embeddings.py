"""Rule script: fine-tune the embedding model of one corpus."""

from ragd_train.embeddings.train import EmbeddingTrainingConfig, train_embeddings
from ragd_train.progress import rule_log
from ragd_train.ragd.config import index_folders
from ragd_train.ragd.hints import ragd_config_hint
from ragd_train.settings import bind

with rule_log(snakemake):
    meta = train_embeddings(
        snakemake.input.train,
        snakemake.output.model,
        bind(EmbeddingTrainingConfig, snakemake.params.settings),
        snapshot_path=snakemake.input.snapshot,
        dev_path=snakemake.input.dev,
        precision=snakemake.params.settings["encoding"]["precision"],
    )
    folders = index_folders(snakemake.input.snapshot, None)
    print(ragd_config_hint(snakemake.output.model, meta["output_dimension"], folders))
