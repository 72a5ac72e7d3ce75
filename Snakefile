# ragd-train: every fine-tuned model is a file target.
#   snakemake --cores 2                          # the demo: training data + embedding model
#   snakemake --cores 2 models/demo-embeddings   # one model
# The working directory is the workspace (a checkout, or $RAGD_HOME through `ragd train`).
import os


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"
include: "rules/generate.smk"
include: "rules/embeddings.smk"
include: "rules/evaluate.smk"
include: "rules/llm.smk"
include: "rules/reranker.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# The snapshot: re-read from its source at every DAG build, written only by this job, under the lock.
rule sync_snapshot:
    input:
        snapshot_source,
    output:
        "snapshots/{corpus}.jsonl",
    log:
        "logs/sync_snapshot/{corpus}.log",
    benchmark:
        "benchmarks/sync_snapshot/{corpus}.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    run:
        run_sync_snapshot(wildcards.corpus, log[0])


# Only reached for a corpus the config does not declare: refused while the DAG is built.
rule unknown_corpus:
    input:
        refuse_unknown_corpus,
    output:
        "{target}",
    log:
        "logs/unknown_corpus/{target}.log",
    benchmark:
        "benchmarks/unknown_corpus/{target}.tsv"
    wildcard_constraints:
        target=UNKNOWN_CORPUS_TARGET,
    localrule: True
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    run:
        pass


onstart:
    start_run()


onsuccess:
    finish_run(True)


onerror:
    finish_run(False)
