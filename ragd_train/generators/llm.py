"""LLM query generation and LLM-as-judge, through any chat backend, cached by content."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Protocol

from ragd_train.cache import GenerationCache, cache_key
from ragd_train.generators import GeneratedQuery

log = logging.getLogger("ragd_train")

QUERY_PROMPT_VERSION = "queries-v1"
QUERY_PROMPT = """You write search queries for a document retrieval system.
Read the passage and write {n} different questions a user could type that this passage answers.
Use the user's own words, not the passage's phrasing; each question must be answerable from the passage alone.
Answer with a JSON array of {n} strings and nothing else.

Passage:
\"\"\"
{text}
\"\"\""""

JUDGE_PROMPT_VERSION = "judge-v1"
JUDGE_PROMPT = """Rate how well the passage answers the search query,
from 1 (unrelated) to 5 (answers it fully).
Answer with JSON only: {{"score": <1-5>, "reason": "<few words>"}}

Query: {query}

Passage:
\"\"\"
{text}
\"\"\""""


class ChatBackend(Protocol):
    """The part of an LLM client the generators use (``OllamaLLM`` or a local model)."""

    model: str

    def chat(
        self, messages: list[dict[str, str]], *, json_format: bool = False, options: dict | None = None
    ) -> str: ...

    def model_digest(self) -> str: ...


def _clean_queries(value: Any, n: int) -> list[str]:
    if isinstance(value, dict):  # {"questions": [...]} and similar wrappers
        value = next((v for v in value.values() if isinstance(v, list)), [])
    if not isinstance(value, list):
        raise ValueError("expected a JSON array of questions")
    queries: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("question") or item.get("query") or ""
        text = " ".join(str(item).split())
        if len(text.split()) >= 2 and text.lower() not in {q.lower() for q in queries}:
            queries.append(text)
    if not queries:
        raise ValueError("no usable question in the answer")
    return queries[:n]


class LLMQueryGenerator:
    """Queries written by an LLM, one call per chunk, served from the cache when possible."""

    def __init__(self, llm: ChatBackend, cache: GenerationCache, *, temperature: float, seed: int) -> None:
        from ragd_train.ollama_client import extract_json

        self.llm = llm
        self.cache = cache
        self.params = {"temperature": temperature, "seed": seed}
        self.digest = llm.model_digest()
        self.name = f"llm:{llm.model}"
        self._extract = extract_json
        self.failures = 0

    def generate(self, chunk: dict[str, Any], n: int) -> list[GeneratedQuery]:
        key = cache_key(
            kind="queries",
            prompt=QUERY_PROMPT_VERSION,
            text=chunk["text"],
            n=n,
            model=self.digest,
            **self.params,
        )
        cached = self.cache.get(key)
        if cached is not None:
            return [{"query": q, "strategy": "llm"} for q in cached]
        prompt = QUERY_PROMPT.format(n=n, text=chunk["text"])
        last: Exception | None = None
        for _ in range(2):  # one more try when the answer does not parse
            answer = self.llm.chat(
                [{"role": "user", "content": prompt}], json_format=True, options=self.params
            )
            try:
                queries = _clean_queries(self._extract(answer), n)
            except ValueError as exc:
                last = exc
                continue
            self.cache.put(key, queries, ref=chunk.get("content_hash"))
            return [{"query": q, "strategy": "llm"} for q in queries]
        self.failures += 1
        log.warning("chunk %s: unusable LLM answer (%s); skipped", chunk["chunk_id"], last)
        return []


class LLMJudge:
    """Scores (query, passage) pairs 1-5 with an LLM; verdicts are cached by content."""

    def __init__(self, llm: ChatBackend, cache: GenerationCache, *, min_score: int, seed: int) -> None:
        from ragd_train.ollama_client import extract_json

        self.llm = llm
        self.cache = cache
        self.min_score = min_score
        self.params = {"temperature": 0.0, "seed": seed}
        self.digest = llm.model_digest()
        self._extract = extract_json

    def judge(self, query: str, text: str) -> dict[str, Any]:  # noqa: D102
        """Return ``{"method": "llm_judge", "score", "reason", "kept"}``."""
        key = cache_key(
            kind="judge",
            prompt=JUDGE_PROMPT_VERSION,
            query=query,
            text=text,
            model=self.digest,
            **self.params,
        )
        verdict = self.cache.get(key)
        if verdict is None:
            answer = self.llm.chat(
                [{"role": "user", "content": JUDGE_PROMPT.format(query=query, text=text)}],
                json_format=True,
                options=self.params,
            )
            try:
                parsed = self._extract(answer)
                score = int(parsed["score"])
                if not 1 <= score <= 5:
                    raise ValueError(score)
                verdict = {"score": score, "reason": str(parsed.get("reason", ""))[:200]}
            except (ValueError, KeyError, TypeError):
                return {"method": "llm_judge", "score": None, "reason": "unparseable verdict", "kept": False}
            self.cache.put(key, verdict, ref=hashlib.sha256(text.encode()).hexdigest())
        return {"method": "llm_judge", **verdict, "kept": verdict["score"] >= self.min_score}
