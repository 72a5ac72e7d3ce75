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
