"""The chat model's report: answer scoring against RAFT examples, the LLM judge over Ollama's real
API, and the base-vs-adapter comparison (the real peft/mlx runs are in test_lora.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ollama_server import OllamaTestServer

from ragd_train.cache import GenerationCache
from ragd_train.chat.ollama import OllamaLLM
from ragd_train.errors import RagdTrainError
from ragd_train.evaluate.llm import (
    AnswerJudge,
    answer_line,
    evaluate_adapter,
    markdown_llm_report,
    score_answer,
    token_f1,
)
from ragd_train.jsonl_io import write_jsonl
from ragd_train.llm.raft import RaftConfig, build_example
from ragd_train.ragd.prompts import NO_INFORMATION

CHUNKS = {
    "backup_chunk_0": {
        "chunk_id": "backup_chunk_0",
        "document_id": "backup",
        "text": "Backups run every night at 02:00. Each backup is kept for 30 days.",
        "metadata": {"filename": "backup.md"},
    },
    "ports_chunk_0": {
        "chunk_id": "ports_chunk_0",
        "document_id": "ports",
        "text": "The API listens on port 8443. The admin console uses port 9443.",
        "metadata": {"filename": "ports.md"},
    },
}
RECORD = {
    "query": "how long is a backup kept",
    "query_id": "q1",
    "positive": CHUNKS["backup_chunk_0"]["text"],
    "positive_id": "backup_chunk_0",
    "source_document": "backup",
    "negatives": [{"id": "ports_chunk_0", "text": CHUNKS["ports_chunk_0"]["text"]}],
}


def example(keep_oracle: bool = True) -> dict:
    made, reason = build_example(
        RECORD, CHUNKS, sorted(CHUNKS), RaftConfig(distractors=1, answers="extractive"), keep_oracle, None
    )
    assert reason is None
    return made


def test_the_reference_answer_scores_full_marks_and_others_do_not() -> None:
    ex = example()
    reference = ex["messages"][-1]["content"]
    assert answer_line(reference).startswith("Each backup is kept for 30 days.")
    assert score_answer(reference, ex) == {"exact_match": 1.0, "f1": 1.0, "grounded": 1.0}

    n = ex["oracle_citation"]
    wrong_cite = reference.replace(f"[{n}]", f"[{3 - n}]")  # the other source's number
    assert (
        score_answer(wrong_cite, ex)["grounded"] == 0.0 and score_answer(wrong_cite, ex)["exact_match"] == 1.0
    )
    made_up = f"It says ##begin_quote##backups are kept forever##end_quote## [{n}].\n<ANSWER>: forever [{n}]"
    assert score_answer(made_up, ex) == {"exact_match": 0.0, "f1": 0.0, "grounded": 0.0}
    partial = f"<ANSWER>: a backup is kept 30 days [{n}]"
    scores = score_answer(partial, ex)
    assert scores["exact_match"] == 0.0 and 0.5 < scores["f1"] < 1.0 and scores["grounded"] == 0.0  # no quote
    assert score_answer("no answer line at all", ex) == {"exact_match": 0.0, "f1": 0.0, "grounded": 0.0}
    assert answer_line("reasoning cut off at\n<ANSWER>:") == ""  # a truncated answer scores 0, no crash
    assert score_answer("reasoning cut off at\n<ANSWER>:", ex) == {
        "exact_match": 0.0,
        "f1": 0.0,
        "grounded": 0.0,
    }


def test_displayed_and_marker_forms_score_alike() -> None:
    """The adapter learns the form ragd's chat shows (no markers); scoring reads it as the marker form."""
    from ragd_train.llm.raft import ANSWER_PREFIX, BEGIN_QUOTE, from_display, to_display

    ex = example()
    shown = ex["messages"][-1]["content"]
    assert BEGIN_QUOTE not in shown and ANSWER_PREFIX not in shown and "\u201c" in shown
    marked = from_display(shown)
    assert to_display(marked) == shown and ANSWER_PREFIX in marked
    assert (
        score_answer(shown, ex)
        == score_answer(marked, ex)
        == {"exact_match": 1.0, "f1": 1.0, "grounded": 1.0}
    )


def test_abstaining_is_right_only_without_the_oracle() -> None:
    absent, present = example(keep_oracle=False), example()
    abstain = f"None of the sources covers it.\n<ANSWER>: {NO_INFORMATION}"
    assert score_answer(abstain, absent) == {"exact_match": 1.0, "f1": 1.0, "grounded": 1.0}
    assert score_answer(abstain, present)["grounded"] == 0.0 and score_answer(abstain, present)["f1"] < 0.3


def test_token_f1_by_hand() -> None:
    assert token_f1("kept for 30 days [1]", "Each backup is kept for 30 days.") == pytest.approx(
        2 * 1 * 4 / 7 / (1 + 4 / 7)
    )
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def _judge_server(scores: list[str]) -> OllamaTestServer:
    server = OllamaTestServer(models=["llama3.2:3b"])
    replies = iter(scores)
    server.responder = lambda body: next(replies)
    return server


def test_judge_grades_over_ollamas_api_and_caches_verdicts(tmp_path: Path) -> None:
    with _judge_server(['{"score": 4, "reason": "same"}', "not json", '{"score": 9}']) as srv:
        llm = OllamaLLM(host=srv.url, model="llama3.2:3b", retries=0)
        judge = AnswerJudge(llm, GenerationCache(tmp_path, "generations"), seed=1)
        assert judge.score("q", "30 days", "30 days") == 4.0
        assert judge.score("q", "30 days", "30 days") == 4.0 and srv.calls["/api/chat"] == 1  # cached
        assert judge.score("q", "30 days", "forever") is None  # unparseable: not cached, not guessed
        assert judge.score("q", "30 days", "a week") is None  # out of range
        assert srv.calls["/api/chat"] == 3


def test_report_compares_base_and_adapter_with_cis(tmp_path: Path) -> None:
    examples = [example(), example(keep_oracle=False)] * 5
    path = tmp_path / "raft_test.jsonl"
    write_jsonl(path, examples)
    by_prompt = {json.dumps(e["messages"][:2]): e["messages"][-1]["content"] for e in examples}

    def adapter(messages: list[dict[str, str]]) -> str:  # answers like the training data
        return by_prompt[json.dumps(messages)]

    def base(messages: list[dict[str, str]]) -> str:  # chatty, no answer line
        return "Backups are important. " + messages[-1]["content"][-40:]

    with _judge_server(['{"score": 5}', '{"score": 1}'] * 2) as srv:
        judge = AnswerJudge(
            OllamaLLM(host=srv.url, model="llama3.2:3b"), GenerationCache(tmp_path, "g"), seed=1
        )
        report = evaluate_adapter(path, base, adapter, judge=judge, max_examples=4, bootstrap_samples=200)
    assert report["examples"] == 4 and report["oracle_absent"] == 2 and report["improved"]
    assert report["kind"] == "llm" and report["summary"].startswith("adapter is better than its base")
    f1 = report["metrics"]["f1"]
    assert (f1["base"], f1["adapter"], f1["delta"]) == (0.0, 1.0, 1.0) and f1["ci95"] == [1.0, 1.0]
    assert report["metrics"]["llm_judge"]["judged"] == 4  # the judge saw base (1) and adapter (5) answers
    assert {report["metrics"]["llm_judge"]["base"], report["metrics"]["llm_judge"]["adapter"]} == {1.0, 5.0}
    md = markdown_llm_report(report)
    assert "| f1 | 0.000 | 1.000 | +1.000 |" in md and "better than its base" in md

    swapped = evaluate_adapter(path, adapter, base, judge_note="no LLM reachable at x", bootstrap_samples=200)
    assert not swapped["improved"] and "NOT better" in markdown_llm_report(swapped)
    assert swapped["metrics"]["llm_judge"] == {"skipped": "no LLM reachable at x"}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RagdTrainError, match="no RAFT test examples"):
        evaluate_adapter(empty, base, adapter)
