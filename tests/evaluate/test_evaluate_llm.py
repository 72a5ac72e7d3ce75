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
    assert score_answer(reference, ex) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "grounded": 1.0,
        "cites_oracle": 1.0,
    }

    n = ex["oracle_citation"]
    wrong_cite = reference.replace(f"[{n}]", f"[{3 - n}]")  # the other source's number
    assert score_answer(wrong_cite, ex) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "grounded": 0.0,
        "cites_oracle": 0.0,
    }
    made_up = f"It says ##begin_quote##backups are kept forever##end_quote## [{n}].\n<ANSWER>: forever [{n}]"
    # cites the right source but quotes words it does not hold: cited, not grounded
    assert score_answer(made_up, ex) == {"exact_match": 0.0, "f1": 0.0, "grounded": 0.0, "cites_oracle": 1.0}
    partial = f"<ANSWER>: a backup is kept 30 days [{n}]"
    scores = score_answer(partial, ex)
    assert scores["exact_match"] == 0.0 and 0.5 < scores["f1"] < 1.0 and scores["grounded"] == 0.0  # no quote
    assert scores["cites_oracle"] == 1.0  # a plain answer citing the right source, as ragd's prompt asks
    nothing = {"exact_match": 0.0, "f1": 0.0, "grounded": 0.0, "cites_oracle": 0.0}
    assert score_answer("no answer line at all", ex) == nothing
    assert answer_line("reasoning cut off at\n<ANSWER>:") == ""  # a truncated answer scores 0, no crash
    assert score_answer("reasoning cut off at\n<ANSWER>:", ex) == nothing


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
        == {"exact_match": 1.0, "f1": 1.0, "grounded": 1.0, "cites_oracle": 1.0}
    )


def test_abstaining_is_right_only_without_the_oracle() -> None:
    absent, present = example(keep_oracle=False), example()
    abstain = f"None of the sources covers it.\n<ANSWER>: {NO_INFORMATION}"
    assert score_answer(abstain, absent) == {
        "exact_match": 1.0,
        "f1": 1.0,
        "grounded": 1.0,
        "abstention": 1.0,
    }
    assert score_answer(abstain, present)["grounded"] == 0.0 and score_answer(abstain, present)["f1"] < 0.3
    guess = "Backups are kept for 30 days [1]."  # plain text: its last line is read as the answer
    assert score_answer(guess, absent) == {"exact_match": 0.0, "f1": 0.0, "grounded": 0.0, "abstention": 0.0}


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

    def adapter(prompts: list[list[dict[str, str]]]) -> list[str]:  # answers like the training data
        return [by_prompt[json.dumps(messages)] for messages in prompts]

    def base(prompts: list[list[dict[str, str]]]) -> list[str]:  # chatty, no answer line
        return ["Backups are important. " + messages[-1]["content"][-40:] for messages in prompts]

    with _judge_server(['{"score": 5}', '{"score": 1}'] * 2) as srv:  # the judge prefers the base
        judge = AnswerJudge(
            OllamaLLM(host=srv.url, model="llama3.2:3b"), GenerationCache(tmp_path, "g1"), seed=1
        )
        judged_worse = evaluate_adapter(
            path, base, adapter, judge=judge, max_examples=4, bootstrap_samples=200
        )
    assert judged_worse["metrics"]["f1"]["ci95"] == [1.0, 1.0] and not judged_worse["improved"]
    assert (
        judged_worse["losses"] == ["RAFT test llm_judge"]
        and "significantly worse on" in judged_worse["summary"]
    )

    with _judge_server(['{"score": 1}', '{"score": 5}'] * 2) as srv:
        judge = AnswerJudge(
            OllamaLLM(host=srv.url, model="llama3.2:3b"), GenerationCache(tmp_path, "g2"), seed=1
        )
        report = evaluate_adapter(path, base, adapter, judge=judge, bootstrap_samples=200)
    assert report["examples"] == 10 and report["oracle_absent"] == 5 and report["improved"], report["summary"]
    assert report["kind"] == "llm" and report["summary"].startswith("adapter is better than its base")
    f1 = report["metrics"]["f1"]
    assert (f1["base"], f1["adapter"], f1["delta"]) == (0.0, 1.0, 1.0) and f1["ci95"] == [1.0, 1.0]
    assert report["metrics"]["llm_judge"]["judged"] == 10  # the judge saw base (1) and adapter (5) answers
    assert (report["metrics"]["llm_judge"]["base"], report["metrics"]["llm_judge"]["adapter"]) == (1.0, 5.0)
    md = markdown_llm_report(report)
    assert "| f1 | 10 | 0.000 | 1.000 | +1.000 |" in md and "better than its base" in md
    assert report["metrics"]["abstention"]["n"] == 5 and report["metrics"]["cites_oracle"]["n"] == 5
    # the same all-win on 4 prompts: the CI is [1, 1] but a sign-flip test cannot confirm 4 signs
    few = evaluate_adapter(path, base, adapter, max_examples=4, bootstrap_samples=200)
    assert few["metrics"]["f1"]["ci95"] == [1.0, 1.0] and few["metrics"]["f1"]["p_value"] > 0.05
    assert not few["improved"] and "sign-flip test does not confirm it" in few["summary"]

    swapped = evaluate_adapter(path, adapter, base, judge_note="no LLM reachable at x", bootstrap_samples=200)
    assert not swapped["improved"] and "NOT better" in markdown_llm_report(swapped)
    assert swapped["metrics"]["llm_judge"] == {"skipped": "no LLM reachable at x"}
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RagdTrainError, match="no RAFT test examples"):
        evaluate_adapter(empty, base, adapter)


def test_natural_questions_are_asked_with_the_search_results_as_context() -> None:
    """A natural question gets ragd's prompt with the retrieved chunks in rank order; the answer is
    grounded when it quotes them and cites a source of a document that answers it, or, when search
    found none, when it abstains."""
    from ragd_train.evaluate.llm import question_prompts, score_question_answer

    questions = {"nq1": "how long is a backup kept", "nq2": "which port does the console use"}
    qrels = {"nq1": {"backup": 1}, "nq2": {"console-guide": 1}}  # nq2's document was not retrieved
    items = question_prompts(
        questions, qrels, list(CHUNKS.values()), [["ports_chunk_0", "backup_chunk_0"], ["ports_chunk_0"]]
    )
    found, missed = items
    assert found["relevant_citations"] == [2] and missed["relevant_citations"] == []
    context = found["messages"][1]["content"]
    assert (
        context.index("[1] ports.md") < context.index("[2] backup.md")
        and "how long is a backup kept" in context
    )
    quoted = "It says \u201cEach backup is kept for 30 days.\u201d [2].\nKept for 30 days [2]."
    assert score_question_answer(quoted, found) == {"grounded": 1.0, "cites_relevant": 1.0}
    assert score_question_answer(quoted.replace("[2]", "[1]"), found) == {
        "grounded": 0.0,
        "cites_relevant": 0.0,
    }
    invented = "It says \u201cbackups are kept forever\u201d [2].\nForever [2]."
    assert score_question_answer(invented, found) == {"grounded": 0.0, "cites_relevant": 1.0}
    abstain = f"The sources do not say.\n{NO_INFORMATION}"
    assert score_question_answer(abstain, missed) == {"grounded": 1.0, "abstention": 1.0}
    assert score_question_answer("Port 9443 [1].", missed) == {"grounded": 0.0, "abstention": 0.0}


def test_a_worse_adapter_on_natural_questions_is_not_better(tmp_path: Path) -> None:
    """Equal on the RAFT test prompts' F1 gain is not enough: a significant loss on the natural
    questions makes the verdict NOT better."""
    from ragd_train.evaluate.llm import question_prompts

    examples = [example()] * 6
    path = tmp_path / "raft_test.jsonl"
    write_jsonl(path, examples)
    reference = examples[0]["messages"][-1]["content"]
    questions = {f"nq{i}": "how long is a backup kept" for i in range(12)}
    items = question_prompts(
        questions, {q: {"backup": 1} for q in questions}, list(CHUNKS.values()), [["backup_chunk_0"]] * 12
    )
    good = "It says \u201cEach backup is kept for 30 days.\u201d [1].\nKept for 30 days [1]."

    def base(prompts: list[list[dict[str, str]]]) -> list[str]:
        return [
            good if "KNOWLEDGE" in p[1]["content"] and p in [i["messages"] for i in items] else "no"
            for p in prompts
        ]

    def adapter(prompts: list[list[dict[str, str]]]) -> list[str]:
        return [reference if p == examples[0]["messages"][:2] else "I am not sure." for p in prompts]

    report = evaluate_adapter(path, base, adapter, questions=items, bootstrap_samples=200)
    assert report["metrics"]["f1"]["ci95"][0] > 0 and report["questions"]["count"] == 12
    q = report["questions"]["metrics"]
    assert (
        q["grounded"]["base"] == 1.0
        and q["grounded"]["adapter"] == 0.0
        and q["abstention"] == {"skipped": "no prompt it applies to"}
    )
    assert not report["improved"] and "natural questions grounded" in report["summary"]
    assert "### Natural questions with ragd's search results (12 questions" in markdown_llm_report(report)
