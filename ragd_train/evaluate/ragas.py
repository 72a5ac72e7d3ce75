"""RAGAS's LLM-judged metrics over Ollama: faithfulness, answer relevancy, LLM context precision.

For each test query and each retriever (base, fine-tuned), the configured Ollama model answers from
the top ``top_k`` retrieved chunks with ragd's own chat prompt; RAGAS then judges the answer
(``Faithfulness``), its relevance to the query (``ResponseRelevancy``, with the base embedding
model) and the usefulness of each retrieved chunk (``LLMContextPrecisionWithoutReference``).
The LLM goes through this package's Ollama client (retries, backoff) behind RAGAS's
``BaseRagasLLM`` interface, and every completion is cached by content, so a re-run costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.cache import GenerationCache, cache_key

log = logging.getLogger("ragd_train")

ANSWER_PROMPT_VERSION = "rag-answer-v1"
LLM_METRICS = ("faithfulness", "answer_relevancy", "llm_context_precision")


def _base_classes() -> tuple[Any, Any]:
    from ragas.embeddings.base import BaseRagasEmbeddings
    from ragas.llms.base import BaseRagasLLM

    return BaseRagasLLM, BaseRagasEmbeddings


def make_ragas_llm(llm: Any, cache: GenerationCache, seed: int) -> Any:
    """A RAGAS ``BaseRagasLLM`` that sends each prompt to ``llm`` (an ``OllamaLLM``) as one chat turn."""
    from langchain_core.outputs import Generation, LLMResult

    base_llm, _ = _base_classes()

    @dataclass
    class OllamaRagasLLM(base_llm):  # type: ignore[misc, valid-type]
        client: Any = field(default=None, repr=False)
        store: Any = field(default=None, repr=False)
        seed: int = 0
        digest: str = ""

        def _one(self, text: str, temperature: float, seed: int) -> str:
            options = {"temperature": float(temperature), "seed": seed}
            key = cache_key(kind="ragas", prompt=text, model=self.digest, **options)
            return self.store.fetch(
                key,
                lambda: self.client.chat(
                    [{"role": "user", "content": text}], json_format=True, options=options
                ),
                valid=lambda hit: isinstance(hit, str),
            )

        def generate_text(
            self, prompt: Any, n: int = 1, temperature: float = 0.01, stop: Any = None, callbacks: Any = None
        ) -> Any:
            text = prompt.to_string()
            replies = [self._one(text, temperature or 0.0, self.seed + i) for i in range(n)]
            return LLMResult(generations=[[Generation(text=r) for r in replies]])

        async def agenerate_text(
            self,
            prompt: Any,
            n: int = 1,
            temperature: float | None = 0.01,
            stop: Any = None,
            callbacks: Any = None,
        ) -> Any:
            return await asyncio.to_thread(self.generate_text, prompt, n, temperature or 0.0, stop, callbacks)

        def is_finished(self, response: Any) -> bool:
            return True

    return OllamaRagasLLM(client=llm, store=cache, seed=seed, digest=llm.model_digest())


def make_ragas_embeddings(model: Any) -> Any:
    """A RAGAS embeddings object backed by a loaded sentence-transformers model."""
    _, base_embeddings = _base_classes()

    class SentenceTransformerEmbeddings(base_embeddings):  # type: ignore[misc, valid-type]
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.encoder.encode(texts, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.embed_documents(texts)

        async def aembed_query(self, text: str) -> list[float]:
            return self.embed_query(text)

    return SentenceTransformerEmbeddings(model)


def rag_answer(llm: Any, cache: GenerationCache, query: str, chunks: list[dict[str, Any]], seed: int) -> str:
    """The answer ragd's chat model would give from ``chunks`` (ragd's prompt and context layout)."""
    from ragd_train.ragd.prompts import Source, chunk_filename, format_context, system_prompt, user_message

    sources = [
        Source(c["chunk_id"], str(c.get("document_id", c["chunk_id"])), chunk_filename(c), c["text"], "", "")
        for c in chunks
    ]
    context, _ = format_context(sources)
    options = {"temperature": 0.0, "seed": seed}
    messages = [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": user_message(context, query)},
    ]
    key = cache_key(
        kind="rag_answer",
        prompt=ANSWER_PROMPT_VERSION,
        messages=messages,
        model=llm.model_digest(),
        **options,
    )
    return cache.fetch(
        key, lambda: llm.chat(messages, options=options).strip(), valid=lambda hit: isinstance(hit, str)
    )


def ragas_llm_metrics(
    queries: list[str],
    retrieved: dict[str, list[list[dict[str, Any]]]],
    llm: Any,
    embedder: Any,
    *,
    cache_dir: str | Path,
    max_queries: int = 20,
    top_k: int = 3,
    seed: int = 42,
    budget_minutes: float = 0,
) -> dict[str, Any]:
    """Mean RAGAS LLM-judged scores per retriever (``retrieved[side][i]`` = chunks for query i).

    Every retriever is scored on query i before query i+1, so when ``budget_minutes`` (0 = none)
    runs out, after the query in progress, both means cover the same queries. A score RAGAS cannot
    compute (an unreadable verdict, NaN) is left out of the mean and counted.
    """
    import time

    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics import Faithfulness, LLMContextPrecisionWithoutReference, ResponseRelevancy

    from ragd_train.progress import track

    cache = GenerationCache(cache_dir, "generations")
    judge = make_ragas_llm(llm, cache, seed)
    metrics = {
        "faithfulness": Faithfulness(llm=judge),
        "answer_relevancy": ResponseRelevancy(llm=judge, embeddings=make_ragas_embeddings(embedder)),
        "llm_context_precision": LLMContextPrecisionWithoutReference(llm=judge),
    }
    n = min(max_queries, len(queries))
    out: dict[str, Any] = {
        "status": "ok",
        "judge": f"ollama:{llm.model}",
        "queries": n,
        "top_k": top_k,
        "metrics": list(LLM_METRICS),
    }

    async def score(sample: Any) -> dict[str, float]:
        return {name: float(await m.single_turn_ascore(sample)) for name, m in metrics.items()}

    values = {side: {name: [] for name in metrics} for side in retrieved}
    start = time.monotonic()
    done = 0
    for i in track(range(n), f"RAGAS LLM metrics ({', '.join(retrieved)})"):
        for side, per_query in retrieved.items():
            chunks = per_query[i][:top_k]
            response = rag_answer(llm, cache, queries[i], chunks, seed)
            sample = SingleTurnSample(
                user_input=queries[i], response=response, retrieved_contexts=[c["text"] for c in chunks]
            )
            for name, value in asyncio.run(score(sample)).items():
                values[side][name].append(value)
        done = i + 1
        if budget_minutes and time.monotonic() - start > budget_minutes * 60 and done < n:
            log.warning(
                "RAGAS LLM metrics: %d of %d queries in the budget of %g min (evaluation.ragas_llm_minutes)",
                done,
                n,
                budget_minutes,
            )
            out["stopped_at_budget_minutes"] = budget_minutes
            break
    out["queries"] = done
    for side in retrieved:
        out[side] = {}
        for name, vals in values[side].items():
            finite = [v for v in vals if np.isfinite(v)]
            out[side][name] = float(np.mean(finite)) if finite else None
            out[side][f"{name}_failed"] = len(vals) - len(finite)
    return out
