"""The shape every report shares, whatever the model it judges.

Beside each kind's own details, a report holds ``kind`` (embeddings, reranker or llm), ``headline``
(``metric``, ``base``, ``finetuned``, ``delta``, ``ci_low``, ``ci_high``, ``p_value``: the one
comparison the verdict rests on), ``improved`` and ``summary`` (that verdict in one sentence). It is
written as JSON (what ``ragd train evaluate`` and ``list`` read) and Markdown, each atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragd_train.jsonl_io import atomic_open, write_json

KINDS = ("embeddings", "reranker", "llm")
HEADLINE_KEYS = ("metric", "base", "finetuned", "delta", "ci_low", "ci_high", "p_value")


def conclude(report: dict[str, Any], kind: str, improved: bool, summary: str) -> dict[str, Any]:
    """Add the shared verdict fields to ``report`` (and return it)."""
    missing = [k for k in HEADLINE_KEYS if k not in report.get("headline", {})]
    if kind not in KINDS or missing:
        raise ValueError(f"a {kind} report needs headline fields {missing}")
    report.update(kind=kind, improved=bool(improved), summary=summary)
    return report


def verdict(report: dict[str, Any]) -> tuple[str, bool]:
    """The report's one-sentence summary and whether the model improved on its base."""
    return report["summary"], bool(report["improved"])


def write(report: dict[str, Any], json_path: str | Path, md_path: str | Path, markdown: str) -> None:
    """The JSON and Markdown files of a report, each written atomically."""
    with atomic_open(md_path) as handle:
        handle.write(markdown)
    write_json(json_path, report)
