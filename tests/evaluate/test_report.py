"""The shape all three reports share: kind, headline, improved, summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragd_train.errors import InputError
from ragd_train.evaluate.report import HEADLINE_KEYS, Report, conclude, read_report, verdict, write


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may read or write the user's own ~/.ragd."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def written_report(tmp_path: Path) -> tuple[dict, Path]:
    headline = {"metric": "ndcg@10", "test_set": "synthetic", "base": 0.5, "finetuned": 0.6, "delta": 0.1}
    headline |= {"ci_low": 0.02, "ci_high": 0.18, "p_value": None}
    report = conclude({"headline": headline, "gate": {"verdict": "promoted"}}, "embeddings", True, "Better.")
    write(report, tmp_path / "r.json", tmp_path / "r.md", "# r\n")
    return report, tmp_path / "r.json"


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


def test_a_written_report_reads_back_as_the_model(tmp_path: Path) -> None:
    report, path = written_report(tmp_path)
    read = read_report(path)
    assert isinstance(read, Report) and read.kind == "embeddings" and read.headline.delta == 0.1
    assert read.headline.p_value is None and read.model_extra == {"gate": {"verdict": "promoted"}}
    assert read.headline.model_extra == {"test_set": "synthetic"}
    assert verdict(read) == verdict(report) == ("Better.", True)
    assert read.model_dump(mode="json") == report  # nothing the writer put in is lost


def test_a_report_missing_headline_delta_is_refused_naming_the_field(tmp_path: Path) -> None:
    report, path = written_report(tmp_path)
    del report["headline"]["delta"]
    path.write_text(json.dumps(report))
    with pytest.raises(InputError) as caught:
        read_report(path)
    assert caught.value.field == "headline.delta" and caught.value.path == str(path)
    assert str(caught.value) == f"{path}: field 'headline.delta': is missing"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "file not found"),
        ('{"kind": "llm", "headline": {', ":1: not valid JSON"),
        ('{"kind": "colbert"}', "field 'kind'"),
        ('{"kind": "llm", "headline": [], "improved": true, "summary": "x"}', "field 'headline': is not an"),
    ],
)
def test_a_bad_report_is_one_line_naming_the_file(tmp_path: Path, content: str | None, says: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as caught:
        read_report(path)
    assert str(caught.value).startswith(str(path)) and says in str(caught.value)
    assert "\n" not in str(caught.value)
