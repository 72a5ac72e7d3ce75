"""ragd's chat prompt and context layout: what ragd's chat model reads, rebuilt outside ragd.

The context is laid out exactly as ragd lays it out for its chat model
(``ragd.chat.context.ContextWindow.format_context``): the ``=== KNOWLEDGE BASE SOURCES ===`` header
with its citation guidance, one ``[n] filename`` block per document (chunks of the same document
share one number, joined by ``[...]``), blocks separated by ``---``. The system prompt and the user
message are ragd's ``answer`` template (``ragd.chat.prompts``) when ragd is installed, else a
built-in copy of ragd 0.9.6's. The RAFT training data (:mod:`ragd_train.llm.raft`) and the
evaluation's RAG answers (:mod:`ragd_train.evaluate.ragas`) both use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

CONTEXT_HEADER = (
    "=== KNOWLEDGE BASE SOURCES ===\n"
    "Cite using [1] or [1;2] for multiple. "
    "Ignore (Author, Year) citations within text.\n\n"
)
SOURCE_SEPARATOR = "\n\n---\n\n"
CHUNK_SEPARATOR = "\n\n[...]\n\n"
NO_INFORMATION = "I don't have information about that in my indexed documents."
SYSTEM_PROMPT = (
    "You are a helpful assistant that answers questions based ONLY on the provided context. "
    "CRITICAL RULES:\n"
    "1. ONLY use information explicitly stated in the provided context.\n"
    "2. NEVER make up, fabricate, or hallucinate citations, references, or sources.\n"
    "3. NEVER use your general knowledge to answer if the context lacks information.\n"
    "4. If the context does not contain relevant information, respond with: "
    f"'{NO_INFORMATION}'\n"
    "5. Always cite sources by referencing the document names shown in the context.\n"
    "Be concise and accurate."
)
USER_TEMPLATE = """Answer the following question based ONLY on the provided context.

IMPORTANT: If the context does not contain relevant information, say "{no_info}" Do NOT make up \
references or use general knowledge.

Context:
{context}

Question: {question}

Provide a clear, accurate answer citing only sources shown in the context above."""

# How ragd asks its model to cite: ``[1]`` or ``[1;2]``.
CITATION = re.compile(r"\[(\d+(?:\s*;\s*\d+)*)\]")


@dataclass
class Source:
    """One chunk placed in the context."""

    chunk_id: str
    document_id: str
    filename: str
    text: str
    role: str  # oracle | distractor
    origin: str  # oracle | mined | random
    pages: list[int] = field(default_factory=list)


def chunk_filename(chunk: dict[str, Any]) -> str:
    """The name ragd shows for a chunk: its document's filename (as ragd's ``document_name``)."""
    meta = chunk.get("metadata") or {}
    return str(meta.get("filename") or chunk.get("source") or chunk.get("document_id") or "Unknown")


def chunk_pages(chunk: dict[str, Any]) -> list[int]:
    """The page number ragd shows for a chunk (``metadata.page_number``), if it has one."""
    page = (chunk.get("metadata") or {}).get("page_number")
    return [page] if isinstance(page, int) and not isinstance(page, bool) else []


def format_citation(numbers: list[int]) -> str:
    """``[1]`` or ``[1;2]``, as ragd asks its model to cite."""
    return "[" + ";".join(str(n) for n in sorted(set(numbers))) + "]"


def format_context(sources: list[Source]) -> tuple[str, dict[str, int]]:
    """ragd's context block for ``sources`` (in order) and each chunk's citation number.

    Chunks of one document share a number (the document's first appearance decides the order)
    and are joined with ``[...]``; page numbers are shown as ragd shows them.
    """
    if not sources:
        return "[No relevant context found]", {}
    groups: dict[str, list[Source]] = {}
    for source in sources:
        groups.setdefault(source.document_id, []).append(source)
    numbers: dict[str, int] = {}
    parts: list[str] = []
    for number, chunks in enumerate(groups.values(), start=1):
        header = f"[{number}] {chunks[0].filename}"
        pages = sorted({p for c in chunks for p in c.pages})
        if len(pages) == 1:
            header += f", page {pages[0]}"
        elif pages:
            header += f", pages {pages[0]}-{pages[-1]}"
        parts.append(header + "\n" + CHUNK_SEPARATOR.join(c.text for c in chunks))
        for c in chunks:
            numbers[c.chunk_id] = number
    return CONTEXT_HEADER + SOURCE_SEPARATOR.join(parts), numbers


def _ragd_answer_template() -> Any | None:
    """ragd's own "answer" prompt (``ragd.chat.prompts``, 1.0.10's RAG_ANSWER_TEMPLATE) if installed."""
    try:
        from ragd.chat.prompts import get_prompt_template
    except ImportError:
        return None
    return get_prompt_template("answer")


def prompt_source() -> str:
    """Which prompt the RAFT data is written with (recorded in the model's metadata)."""
    if _ragd_answer_template() is None:
        return "built-in (ragd 0.9.6 layout; install ragd to train on its own prompt)"
    from importlib.metadata import version

    return f"ragd {version('ragd')} chat.prompts answer"


def system_prompt() -> str:
    template = _ragd_answer_template()
    return template.system_prompt if template is not None else SYSTEM_PROMPT


def user_message(context: str, question: str) -> str:
    template = _ragd_answer_template()
    if template is not None:
        return template.format(context=context, question=question)[1]
    return USER_TEMPLATE.format(no_info=NO_INFORMATION, context=context, question=question)
