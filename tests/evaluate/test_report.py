"""The shape all three reports share: kind, headline, improved, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragd_train.evaluate.report import HEADLINE_KEYS, conclude, verdict, write


def test_a_report_gets_the_shared_verdict_fields_and_is_written_whole(tmp_path: Path) -> None:
    headline = dict.fromkeys(HEADLINE_KEYS, 0.5) | {"metric": "ndcg@10"}
    report = conclude({"headline": headline, "own": 1}, "reranker", True, "It improves.")
    assert verdict(report) == ("It improves.", True) and report["kind"] == "reranker"
    write(report, tmp_path / "r.json", tmp_path / "r.md", "# r\n")
    assert json.loads((tmp_path / "r.json").read_text()) == report
    assert (tmp_path / "r.md").read_text() == "# r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # no temporary left


def test_a_report_without_a_full_headline_or_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="delta"):
        conclude({"headline": {"metric": "f1", "base": 0, "finetuned": 1}}, "llm", True, "x")
    with pytest.raises(ValueError):
        conclude({"headline": dict.fromkeys(HEADLINE_KEYS, 0)}, "colbert", True, "x")
