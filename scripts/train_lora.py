"""Rule script: train the RAFT LoRA adapter of one corpus with the rule's backend."""

from ragd_train.llm.lora import train_lora
from ragd_train.llm.lora_config import LoraTrainingConfig
from ragd_train.progress import rule_log
from ragd_train.ragd.hints import ragd_llm_hint
from ragd_train.settings import bind

with rule_log(snakemake):
    train_lora(
        snakemake.input.raft,
        snakemake.input.test,
        snakemake.output.model,
        bind(LoraTrainingConfig, snakemake.params.settings),
        snakemake.params.backend,
        threads=snakemake.threads,
    )
    print(ragd_llm_hint(snakemake.output.model))
