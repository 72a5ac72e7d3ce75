"""Rule script: RAFT training data (oracle + hard distractors in ragd's prompt, CoT answers)."""

from ragd_train.llm.raft import build_raft_data
from ragd_train.progress import rule_log

with rule_log(snakemake):
    build_raft_data(
        snakemake.input.train,
        snakemake.input.test,
        snakemake.input.snapshot,
        snakemake.output.raft,
        snakemake.output.test,
        snakemake.params.settings,
        stats_path=snakemake.output.stats,
        cache_dir="cache",
    )
