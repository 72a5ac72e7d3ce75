"""Query generators: turn one index chunk into synthetic search queries."""

from __future__ import annotations

from typing import Any, Protocol, TypedDict


class GeneratedQuery(TypedDict, total=False):
    query: str
    strategy: str
    positive: str  # replaces the chunk text as the positive (Inverse Cloze Task)


class QueryGenerator(Protocol):
    """What every generator offers."""

    name: str

    def generate(self, chunk: dict[str, Any], n: int) -> list[GeneratedQuery]:
        """Return up to ``n`` distinct queries that ``chunk`` answers."""
        ...
