"""Rule script: synthetic queries for every chunk of a snapshot."""

from ragd_train.generate.queries import generate_queries
from ragd_train.jsonl_io import write_json
from ragd_train.progress import rule_log

with rule_log(snakemake):
    stats = generate_queries(
        snakemake.input.snapshot, snakemake.output.queries, snakemake.params.settings, cache_dir="cache"
    )
    write_json(snakemake.output.stats, stats)
