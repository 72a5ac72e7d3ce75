"""Rule script: hard negatives, quality filter and train/test split."""

import json
from pathlib import Path

from ragd_train.generate.build import build_training_data
from ragd_train.progress import rule_log

with rule_log(snakemake):
    build_training_data(
        snakemake.input.snapshot,
        snakemake.input.queries,
        snakemake.output.train,
        snakemake.output.test,
        snakemake.params.settings,
        dev_path=snakemake.output.dev,
        chat_history=snakemake.params.chat_history,
        chat_questions_path=snakemake.output.chat,
        stats_path=snakemake.output.stats,
        cache_dir="cache",
        generation_stats=json.loads(Path(snakemake.input.generation_stats).read_text()),
    )
