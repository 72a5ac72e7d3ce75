"""Rule script: the embedding models' top candidates reranked by the base and the fine-tuned reranker."""

from functools import cache

from ragd_train.encoding import CachedEncoder
from ragd_train.evaluate.reranker import evaluate_rerankers, write_reranker_report
from ragd_train.progress import rule_log


@cache
def encoder(name):
    return CachedEncoder(name, "cache", precision=snakemake.params.settings["encoding"]["precision"])


def embed(name, texts):
    """Embeddings through the cache that generate-data and the embeddings report filled."""
    return encoder(name).encode(texts)


with rule_log(snakemake):
    settings = snakemake.params.settings
    reranker = settings["reranker"]
    report = evaluate_rerankers(
        snakemake.input.reranker,
        snakemake.input.embeddings,
        settings["embeddings"]["base_model"],
        reranker["base_model"],
        snakemake.input.test,
        snakemake.input.snapshot,
        reranker_fallback=reranker["fallback_model"],
        candidates=reranker["candidates"],
        max_length=reranker["max_length"],
        bootstrap_samples=settings["evaluation"]["bootstrap_samples"],
        seed=settings["seed"],
        embed=embed,
        questions_path=snakemake.input.get("questions") or None,
        strict_questions=snakemake.params.strict_questions,
    )
    write_reranker_report(report, snakemake.output.json, snakemake.output.md)
    print(report["summary"])
