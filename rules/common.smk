import re
import sys
from pathlib import Path
from functools import lru_cache

from snakemake.utils import min_version, validate

from ragd_train.config import resolve_corpus, validate_config
from ragd_train.errors import RagdTrainError
from ragd_train.snapshot import file_sha256, snapshot_digest, sync_snapshot
from ragd_train.staging import (
    backup_models,
    finish_backups,
    recover_orphaned_backups,
    remove_stale_staging,
)
from ragd_train.runner import check_embedding_config, hold_workspace
from ragd_train.settings import rule_settings

min_version("9.0")

# One-line errors naming file, line and field first; then Snakemake's own schema check,
# which also fills in every default.
try:
    validate_config(config, list(workflow.configfiles))
except RagdTrainError as exc:
    sys.exit(f"Error: {exc}")
validate(config, "../config/schema.yaml")

CORPORA = sorted(config["corpora"])


# Corpus names are literal strings (a corpus 'v1.2' must not match 'v1x2').
wildcard_constraints:
    corpus="|".join(re.escape(c) for c in CORPORA),


# A target of a corpus the config does not declare: one line naming it and the known ones,
# instead of Snakemake's "No rule to produce" (rule unknown_corpus in the Snakefile).
KNOWN_CORPORA = "|".join(re.escape(c) for c in CORPORA)
UNKNOWN_CORPUS_TARGET = (
    rf"snapshots/(?!(?:{KNOWN_CORPORA})\.jsonl$)[^/]+\.jsonl"
    rf"|training_data/(?!(?:{KNOWN_CORPORA})/)[^/]+/[^/]+"
    rf"|(?:models|reports)/(?!(?:{KNOWN_CORPORA})-)[^/-]+-[^/]+"
)


def refuse_unknown_corpus(wildcards):
    folder, rest = wildcards.target.split("/", 1)
    name = (
        rest.removesuffix(".jsonl")
        if folder == "snapshots"
        else re.split(r"[/-]", rest)[0]
    )
    sys.exit(f"Error: unknown corpus '{name}' (known: {', '.join(CORPORA)})")


def all_targets():
    """What `snakemake` builds with no target: every corpus's embedding model and its report."""
    return [f"reports/{c}-embeddings.json" for c in CORPORA]


def corpus_config(corpus):
    """The corpus's config with its paths made absolute; a bad path is one line, then exit."""
    try:
        return resolve_corpus(
            config["corpora"][corpus], [Path(workflow.main_snakefile).parent]
        )
    except RagdTrainError as exc:
        sys.exit(f"Error: corpus '{corpus}': {exc}")


@lru_cache(maxsize=None)
def snapshot_digest_of(corpus):
    """The sha256 the corpus's snapshot would have now: its source is read, nothing is written."""
    source = corpus_config(corpus)
    try:
        return snapshot_digest(corpus, source)
    except RagdTrainError as exc:
        sys.exit(f"Error: corpus '{corpus}': {exc}")


def snapshot_source(wildcards):
    """Input function of sync_snapshot, run while the DAG is built (also with -n): it only reads.

    A snapshot whose content differs from its source is forced to resync; one that matches is left
    alone (no job, no new mtime, nothing downstream reruns). The write itself is the job, run
    under Snakemake's lock, so a dry run or a run the lock refuses writes nothing.
    """
    path = f"snapshots/{wildcards.corpus}.jsonl"
    digest = snapshot_digest_of(wildcards.corpus)
    if file_sha256(path) not in (None, digest):
        workflow.dag.forcefiles.add(path)
    return []


def snapshot_of(wildcards):
    return f"snapshots/{wildcards.corpus}.jsonl"


def run_sync_snapshot(corpus, log_path):
    """The sync_snapshot job: write snapshots/<corpus>.jsonl and its manifest from the source."""
    source = corpus_config(corpus)
    path, changed = sync_snapshot(corpus, source, "snapshots")
    Path(log_path).write_text(f"{path}: {'updated' if changed else 'unchanged'}\n")


def questions_of(wildcards):
    """The corpus's natural-question file (corpora.<name>.questions), if it has one."""
    corpus = config["corpora"][wildcards.corpus]
    if "questions" not in corpus:
        return []
    return corpus_config(wildcards.corpus)["questions"]


# ---------------------------------------------------------------- a failed run changes nothing
# onstart (Snakefile) runs after the lock is taken and the DAG is built, before any job runs (never
# in a dry run); onsuccess / onerror when the run ends.
MODEL_BACKUPS = {}
RUN_LOCK = []


def start_run():
    """Hold the workspace (so `ragd train unlock` refuses while this run lives); refuse a config a
    rebuild would fail on; tidy after killed runs; back up models to rebuild."""
    try:
        RUN_LOCK.append(hold_workspace(Path.cwd()))
    except RagdTrainError as exc:
        sys.exit(f"Error: {exc}")
    jobs = list(workflow.dag.needrun_jobs())
    if any(job.rule.name == "train_embeddings" for job in jobs):
        try:
            check_embedding_config(config, list(workflow.configfiles))
        except RagdTrainError as exc:
            sys.exit(f"Error: {exc}")
    remove_stale_staging("models")
    corpora_data = sorted(p for p in Path("training_data").glob("*") if p.is_dir())
    for folder in ["models", "reports", *corpora_data]:
        for restored in recover_orphaned_backups(folder):
            forget_incomplete(restored)
            print(
                f"Restored {restored} (left by a killed run; out of date)",
                file=sys.stderr,
            )
    # models, training data and reports: a failed rebuild puts the previous ones back
    rebuilt = {
        str(f)
        for job in jobs
        for f in job.output
        if str(f).startswith(("models/", "training_data/", "reports/"))
    }
    MODEL_BACKUPS.update(backup_models(sorted(rebuilt)))


def forget_incomplete(path):
    """A restored model is the last good one, not a half-written output: drop Snakemake's
    incomplete mark (left when a job is cancelled) so the next run does not refuse it.
    """
    from snakemake.io import IOFile

    workflow.persistence.cleanup_metadata(IOFile(str(path)))


def finish_run(success):
    """Drop the backups; after a failure, put back each model the run removed and did not rebuild."""
    for restored in finish_backups(MODEL_BACKUPS, success):
        forget_incomplete(restored)
        print(
            f"Kept the last good {restored} (its rebuild failed; still out of date)",
            file=sys.stderr,
        )
    MODEL_BACKUPS.clear()


def chat_history_dir(wildcards):
    """The corpus's ragd chat history folder (corpora.<name>.chat_history), or None."""
    corpus = config["corpora"][wildcards.corpus]
    if "chat_history" not in corpus:
        return None
    return resolve_corpus(corpus, [Path(workflow.main_snakefile).parent])[
        "chat_history"
    ]


def chat_history_files(wildcards):
    """Its session files: a new or changed chat rebuilds the training data."""
    folder = chat_history_dir(wildcards)
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(str(p) for p in Path(folder).glob("*.json") if p.is_file())


def strict_questions(wildcards):
    """Unknown documents in the questions are an error, unless `limit` cut the corpus."""
    return "limit" not in config["corpora"][wildcards.corpus]


def settings_of(rule):
    """What a rule reads of the config, from the table in ragd_train/settings.py; as its
    params, a change of these settings reruns it and nothing else."""
    return rule_settings(config, rule)


def ollama_base_digest(wildcards):
    """The digest of the GGUF in Ollama's store that the peft rule trains on ("" when the base is not
    there): a new `ollama pull` of the same name reruns training."""
    from ragd_train.llm.ollama_store import manifest_digest

    return manifest_digest(settings_of("train_lora")["llm"].get("base_model") or "")
