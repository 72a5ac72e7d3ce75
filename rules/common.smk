import json
import sys
from pathlib import Path
from functools import lru_cache

from snakemake.utils import min_version, validate

from ragd_train.config import resolve_corpus, validate_config
from ragd_train.errors import RagdTrainError
from ragd_train.snapshot import sync_snapshot

min_version("9.0")

# One-line errors naming file, line and field first; then Snakemake's own schema check,
# which also fills in every default.
try:
    validate_config(config, list(workflow.configfiles))
except RagdTrainError as exc:
    sys.exit(f"Error: {exc}")
validate(config, "../config/schema.yaml")

CORPORA = sorted(config["corpora"])


wildcard_constraints:
    corpus="|".join(CORPORA),


def all_targets():
    """What `snakemake` builds with no target: every corpus's embedding model and its report."""
    return [f"reports/{c}-embeddings.json" for c in CORPORA]


@lru_cache(maxsize=None)
def synced_snapshot(corpus):
    """Re-read the corpus source; rewrite the snapshot only when its content changed."""
    source = resolve_corpus(
        config["corpora"][corpus], [Path(workflow.main_snakefile).parent]
    )
    try:
        path, _changed = sync_snapshot(corpus, source, "snapshots")
    except RagdTrainError as exc:
        sys.exit(f"Error: corpus '{corpus}': {exc}")
    return str(path)


def snapshot_of(wildcards):
    return synced_snapshot(wildcards.corpus)


def section(name, *keys):
    """Settings that decide a rule's output, as JSON (a change in them reruns the rule)."""
    values = {k: config[name][k] for k in keys} if keys else config[name]
    return json.dumps(values, sort_keys=True)
