"""The rule files: every evaluation rule's report is registered for `snakemake --report`."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_report_is_registered_with_a_caption() -> None:
    text = (ROOT / "rules" / "evaluate.smk").read_text()
    rules = dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, re.S | re.M))
    assert set(rules) == {"evaluate_embeddings", "evaluate_reranker", "evaluate_llm"}
    for name, body in rules.items():
        kind = name.removeprefix("evaluate_")
        registered = re.search(
            r'report\(\s*"reports/\{corpus\}-' + kind + r'\.\w+",\s*caption="\.\./(report/\w+\.rst)"', body
        )
        assert registered, f"rule {name} registers no report() output"
        caption = ROOT / registered.group(1)
        assert caption.is_file() and "{{ snakemake.wildcards.corpus }}" in caption.read_text(), caption


def test_corpus_names_are_literal_and_an_unknown_one_is_named(tmp_path: Path) -> None:
    """The corpus wildcard was an unescaped regex: a corpus 'v1.2' also matched 'v1x2'; an
    unknown corpus was Snakemake's "No rule to produce" (#28 item 11)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import cfgargs, snakemake

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text about backups.\n")
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"corpora:\n  v1.2:\n    source: documents\n    path: {docs}\n")
    ws = tmp_path / "ws"
    known = snakemake(ws, *cfgargs(cfg), "-n", "--", "training_data/v1.2/train.jsonl")
    assert known.returncode == 0, known.stderr[-2000:]
    for target, name in [
        ("training_data/v1x2/train.jsonl", "v1x2"),
        ("models/nope-embeddings", "nope"),
        ("snapshots/v1x2.jsonl", "v1x2"),
    ]:
        result = snakemake(ws, *cfgargs(cfg), "-n", "--", target)
        assert result.returncode != 0
        assert f"Error: unknown corpus '{name}' (known: demo, v1.2)" in result.stderr, result.stderr[-2000:]


def test_a_corpus_path_that_is_a_symlink_loop_stops_the_workflow_in_one_line(tmp_path: Path) -> None:
    """It was a RuntimeError traceback from pathlib (#28 item 10)."""
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import cfgargs, snakemake

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(f"corpora:\n  x:\n    source: documents\n    path: {loop}\n")
    result = snakemake(tmp_path / "ws", *cfgargs(cfg), "-n", "--", "training_data/x/train.jsonl")
    assert result.returncode != 0
    assert f"Error: corpus 'x': {loop}: field 'path': is a symlink loop" in result.stderr
    assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr, result.stderr[-2000:]
