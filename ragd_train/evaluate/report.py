"""The shape every report shares, whatever the model it judges.

Beside each kind's own details, a report holds ``kind`` (embeddings, reranker or llm), ``headline``
(``metric``, ``base``, ``finetuned``, ``delta``, ``ci_low``, ``ci_high``, ``p_value``: the one
comparison the verdict rests on), ``improved`` and ``summary`` (that verdict in one sentence). It is
written as JSON (what ``ragd train evaluate`` and ``list`` read) and Markdown, each atomically.
:class:`Report` is that shape, :func:`read_report` reads it back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

from ragd_train.jsonl_io import atomic_open, read_json_object, write_json
from ragd_train.metadata import validate_as

Kind = Literal["embeddings", "reranker", "llm"]
KINDS: tuple[str, ...] = get_args(Kind)


class Headline(BaseModel):
    """The one comparison a report's verdict rests on (a number may be ``null``, never absent)."""

    model_config = ConfigDict(extra="allow")

    metric: str
    base: float | None
    finetuned: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None


class Report(BaseModel):
    """The fields every report has; each kind's own details are kept as they are."""

    model_config = ConfigDict(extra="allow")

    kind: Kind
    headline: Headline
    improved: bool
    summary: str


HEADLINE_KEYS = tuple(Headline.model_fields)


def read_report(path: str | Path) -> Report:
    """A report's JSON file; a one-line :class:`InputError` naming the file (and field) otherwise."""
    return validate_as(Report, read_json_object(path), path)


def conclude(report: dict[str, Any], kind: str, improved: bool, summary: str) -> dict[str, Any]:
    """Add the shared verdict fields to ``report`` (and return it)."""
    missing = [k for k in HEADLINE_KEYS if k not in report.get("headline", {})]
    if kind not in KINDS or missing:
        raise ValueError(f"a {kind} report needs headline fields {missing}")
    report.update(kind=kind, improved=bool(improved), summary=summary)
    return report


def verdict(report: Report | dict[str, Any]) -> tuple[str, bool]:
    """The report's one-sentence summary and whether the model improved on its base."""
    if isinstance(report, Report):
        return report.summary, report.improved
    return report["summary"], bool(report["improved"])


def write(report: dict[str, Any], json_path: str | Path, md_path: str | Path, markdown: str) -> None:
    """The JSON and Markdown files of a report, each written atomically."""
    with atomic_open(md_path) as handle:
        handle.write(markdown)
    write_json(json_path, report)
