"""A/B evaluation: paired statistics, the promotion gate, RAGAS ID metrics, report files and the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragd_train.cli import main
from ragd_train.evaluate.embeddings import evaluate_models, gate_message, write_report
from ragd_train.jsonl_io import write_jsonl
from ragd_train.stats import paired_bootstrap, sign_flip_test

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

DOCS = {
    "tls_chunk_0": "TLS certificates are renewed automatically 30 days before they expire using ACME.",
    "backup_chunk_0": "Backups run nightly at 02:00 and are kept for 30 days in the configured bucket.",
    "mfa_chunk_0": "Two-factor authentication accepts TOTP apps and WebAuthn security keys.",
    "rate_chunk_0": "Each API token may send 600 requests per minute; beyond that the server answers 429.",
    "logs_chunk_0": "Server logs are written to /var/log/nimbus and rotated daily at midnight.",
    "sso_chunk_0": "Single sign-on uses SAML 2.0 with any identity provider that publishes metadata.",
}
QUERIES = [
    ("when do certificates renew", "tls_chunk_0"),
    ("how long are backups retained", "backup_chunk_0"),
    ("can I use a hardware security key to log in", "mfa_chunk_0"),
    ("too many requests error limit per minute", "rate_chunk_0"),
    ("where can I find the log files", "logs_chunk_0"),
    ("configure SAML identity provider", "sso_chunk_0"),
]


@pytest.fixture
def test_set(tmp_path: Path) -> tuple[Path, Path]:
    test = tmp_path / "test.jsonl"
    write_jsonl(
        test,
        [
            {"query": q, "query_id": f"q{i}", "positive_id": d, "positive": DOCS[d]}
            for i, (q, d) in enumerate(QUERIES)
        ],
    )
    snapshot = tmp_path / "snap.jsonl"
    import hashlib

    write_jsonl(
        snapshot,
        [
            {
                "chunk_id": cid,
                "document_id": cid.split("_")[0],
                "text": text,
                "content_hash": hashlib.sha256(text.encode()).hexdigest(),
            }
            for cid, text in DOCS.items()
        ],
    )
    return test, snapshot


def test_bootstrap_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(400)
    new = base + 0.05 + rng.normal(0, 0.05, 400)
    result = paired_bootstrap(base, new, samples=4000, seed=1)
    assert result["ci_low"] < 0.05 < result["ci_high"] and result["ci_low"] > 0
    assert abs(result["delta"] - float((new - base).mean())) < 1e-12
    same = paired_bootstrap(base, base, samples=500)
    assert same == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "confidence": 0.95}
    assert sign_flip_test(base, new, samples=2000) < 0.01
    assert sign_flip_test(base, base + rng.normal(0, 0.05, 400), samples=2000) > 0.05
    assert sign_flip_test(base, base) == 1.0
    with pytest.raises(ValueError):
        paired_bootstrap(base, new[:10])


def test_model_against_itself_is_a_tie_and_rejected(test_set: tuple[Path, Path], tmp_path: Path) -> None:
    test, snapshot = test_set
    report = evaluate_models(MINILM, MINILM, test, snapshot, bootstrap_samples=200)
    head = report["headline"]
    assert head["delta"] == 0 and head["base"] == head["finetuned"] > 0.5
    assert report["gate"]["verdict"] == "rejected"  # a tie is not an improvement
    # MiniLM ranks every answer of this small set first: the set cannot show a gain
    assert all(r["ceiling"] and r["base_mrr@10"] >= 0.95 for r in report["retrieval"])
    assert head["decided"] is False and report["gate"]["reasons"][0].startswith("cannot tell")
    assert gate_message(report).startswith("The report cannot tell whether")
    assert (report["kind"], report["improved"], report["summary"]) == (
        "embeddings",
        False,
        gate_message(report),
    )
    full = report["metrics"]["384"]
    assert set(full) == {"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"}
    ragas = report["ragas"]["finetuned"]
    if ragas["status"] == "ok":  # the eval extra is installed (CI installs it)
        # One relevant chunk per query: ID recall@10 = share of queries with their chunk in the top 10.
        assert ragas["id_context_recall"] == pytest.approx(full["recall@10"]["finetuned"])
        assert ragas["id_context_precision"] == pytest.approx(full["recall@10"]["finetuned"] / len(DOCS))
    assert report["ragas"]["llm_judged"]["status"] == "skipped"
    write_report(report, tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "r.md").read_text()
    assert "![evaluation](r.png)" in md and "| ndcg@10 |" in md and "cannot tell" in md
    assert json.loads((tmp_path / "r.json").read_text())["gate"]["verdict"] == "rejected"


def test_broken_model_is_caught_by_the_gate(
    test_set: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    """A model with random weights 'fine-tuned' from MiniLM loses; the CLI says so and exits 1."""
    test, snapshot = test_set
    broken = tmp_path / "models" / "broken-embeddings"
    shutil.copytree(tiny_model, broken)
    (broken / "training_metadata.json").write_text(
        json.dumps({"base_model": MINILM, "matryoshka_dims": [32, 16]})
    )
    result = CliRunner().invoke(
        main,
        [
            "train",
            "evaluate",
            "--model",
            str(broken),
            "--test-data",
            str(test),
            "--snapshot",
            str(snapshot),
            "--workspace",
            str(tmp_path / "ws"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "NOT better" in result.output and "NDCG@10" in result.output
    report = json.loads((tmp_path / "ws" / "reports" / "adhoc" / "broken-embeddings.json").read_text())
    assert report["headline"]["delta"] < 0 and report["gate"]["verdict"] == "rejected"
    assert report["dims"] == [32, 16] and "16" in report["metrics"]


def test_better_model_is_promoted_without_a_snapshot(
    test_set: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    """MiniLM against a random tiny base wins; without --snapshot the corpus is the test data's texts."""
    test, _ = test_set
    result = CliRunner().invoke(
        main,
        [
            "train",
            "evaluate",
            "--model",
            MINILM.split("/")[1],
            "--test-data",
            str(test),
            "--compare-to",
            str(tiny_model),
            "--workspace",
            str(tmp_path / "ws"),
        ],
    )
    assert result.exit_code == 1 and "no model directory" in result.output  # a name must be a directory
    model_dir = tmp_path / "minilm"
    from ragd_train.hub import resolve_model

    shutil.copytree(resolve_model(MINILM), model_dir)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "evaluate",
            "--model",
            str(model_dir),
            "--test-data",
            str(test),
            "--compare-to",
            str(tiny_model),
            "--workspace",
            str(tmp_path / "ws"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "better than its base" in result.output


def ragas_judge(body: dict) -> str:
    """A rule-based LLM behind Ollama's API: it answers ragd's prompt with the first source's first
    sentence and grades RAGAS's prompts by word overlap, so its verdicts follow the retrieval."""
    prompt = body["messages"][-1]["content"]
    if "KNOWLEDGE BASE SOURCES" in prompt:
        return re.search(r"^\[1\] [^\n]*\n(.+?[.!?])(?:\s|$)", prompt, re.S | re.M).group(1)
    data = json.loads(prompt.rsplit("input: ", 1)[1].rsplit("Output:", 1)[0])

    def words(text: str) -> set[str]:
        return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 3}

    if "statements" in data:  # faithfulness, NLI step: supported when its words are in the context
        verdicts = [
            {"statement": s, "reason": "overlap", "verdict": int(words(s) <= words(data["context"]))}
            for s in data["statements"]
        ]
        return json.dumps({"statements": verdicts})
    if "question" in data and "context" in data:  # context precision
        useful = len(words(data["answer"]) & words(data["context"])) >= 3
        return json.dumps({"reason": "overlap", "verdict": int(useful)})
    if "question" in data:  # faithfulness, statement step
        return json.dumps({"statements": [data["answer"]]})
    return json.dumps({"question": data["response"], "noncommittal": 0})  # answer relevancy


def test_ragas_llm_metrics_run_through_ollamas_api(test_set: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ragas")
    from ollama_server import OllamaTestServer

    from ragd_train.chat.ollama import OllamaLLM

    test, snapshot = test_set
    with OllamaTestServer(models=["llama3.2:3b"], responder=ragas_judge) as srv:
        llm = OllamaLLM(host=srv.url, model="llama3.2:3b", retries=0)
        kwargs = dict(bootstrap_samples=200, llm=llm, ragas_llm_queries=4, cache_dir=tmp_path / "cache")
        report = evaluate_models(MINILM, MINILM, test, snapshot, **kwargs)
        calls = srv.calls["/api/chat"]
        again = evaluate_models(MINILM, MINILM, test, snapshot, **kwargs)
        assert srv.calls["/api/chat"] == calls, "a re-run is answered from the cache"
    judged = report["ragas"]["llm_judged"]
    assert judged["status"] == "ok" and judged["queries"] == 4 and judged["judge"] == "ollama:llama3.2:3b"
    for side in ("base", "finetuned"):
        scores = judged[side]
        # the answers are sentences of the retrieved chunks: fully faithful, and top-1 is relevant here
        assert scores["faithfulness"] == 1.0 and scores["faithfulness_failed"] == 0
        assert 0.0 < scores["llm_context_precision"] <= 1.0
        assert scores["answer_relevancy"] > 0.3  # question = answer, embedded by MiniLM vs the query
    assert again["ragas"]["llm_judged"] == judged
    write_report(report, tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png")
    assert "LLM-judged by ollama:llama3.2:3b on 4 queries" in (tmp_path / "r.md").read_text()


def test_ragas_llm_metrics_stop_at_their_budget_with_both_models_on_the_same_queries(
    test_set: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("ragas")
    from ollama_server import OllamaTestServer

    from ragd_train.chat.ollama import OllamaLLM

    test, snapshot = test_set
    with OllamaTestServer(models=["llama3.2:3b"], responder=ragas_judge) as srv:
        llm = OllamaLLM(host=srv.url, model="llama3.2:3b", retries=0)
        report = evaluate_models(
            MINILM,
            MINILM,
            test,
            snapshot,
            bootstrap_samples=200,
            llm=llm,
            ragas_llm_queries=4,
            ragas_llm_minutes=1e-6,  # outlasted by the first query
            cache_dir=tmp_path / "cache",
        )
        judged = report["ragas"]["llm_judged"]
        assert judged["queries"] == 1 and judged["stopped_at_budget_minutes"] == 1e-6
        assert judged["base"]["faithfulness"] == judged["finetuned"]["faithfulness"] == 1.0
        assert srv.calls["/api/chat"] > 0
    write_report(report, tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png")
    assert "on 1 queries (top 3, stopped by the 1e-06-minute budget" in (tmp_path / "r.md").read_text()


def _row(delta: float, low: float, high: float) -> dict:
    return {"base": 0.5, "finetuned": 0.5 + delta, "delta": delta, "ci_low": low, "ci_high": high}


def test_gate_needs_a_significant_gain_and_no_significant_loss_anywhere() -> None:
    from ragd_train.evaluate.embeddings import gate_reasons

    def rows(*heads: dict) -> list[dict]:
        return [
            {"test_set": s, "mode": m, "metrics": {"ndcg@10": h}}
            for (s, m), h in zip([("questions", "hybrid"), ("synthetic", "dense")], heads, strict=False)
        ]

    win = _row(0.03, 0.01, 0.05)
    assert gate_reasons(win, rows(win, _row(0.02, -0.01, 0.04)), 0.0, True) == []
    assert gate_reasons(_row(0.0, 0.0, 0.0), rows(), 0.0, True) == ["no gain"]
    unsure = _row(0.03, -0.01, 0.07)
    assert "CI of the gain reaches zero" in gate_reasons(unsure, rows(unsure), 0.0, True)[0]
    assert gate_reasons(unsure, rows(unsure), 0.0, False) == []
    assert "below evaluation.require_improvement" in gate_reasons(win, rows(win), 0.05, True)[0]
    hurt = gate_reasons(win, rows(win, _row(-0.04, -0.06, -0.02)), 0.0, True)
    assert hurt == ["a significant NDCG@10 loss on synthetic dense"]


def test_questions_are_checked_against_the_corpus_at_their_line(tmp_path: Path) -> None:
    from ragd_train.errors import InputError
    from ragd_train.evaluate.embeddings import load_questions

    chunks = [{"chunk_id": "a_chunk_0", "document_id": "a", "text": "x"}]
    good = tmp_path / "q.jsonl"
    good.write_text('{"query_id": "n1", "query": "why x", "documents": ["a"]}\n')
    assert load_questions(good, chunks) == ({"n1": "why x"}, {"n1": {"a": 1}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "why x", "documents": ["a"]}\n\n\n{"query": "why y", "documents": ["b"]}\n')
    with pytest.raises(InputError) as err:
        load_questions(bad, chunks)
    assert (err.value.line, err.value.field) == (4, "documents") and "'b'" in str(err.value)
    bad.write_text('{"query": "why x", "documents": "a"}\n')
    with pytest.raises(InputError, match="non-empty list"):
        load_questions(bad, chunks)


@pytest.mark.parametrize("with_ragd", [True, False])
def test_hybrid_search_fuses_ragd_bm25_with_the_dense_ranking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_ragd: bool
) -> None:
    """A chunk that only keyword search finds enters the fused top. (ragd's FTS5 query ANDs every
    term, so the query holds only words of the chunk.)"""
    from ragd_train.ragd.search import HybridSearch

    if with_ragd:
        pytest.importorskip("ragd.search.bm25")
    else:
        monkeypatch.setitem(__import__("sys").modules, "ragd", None)
    chunks = [
        {"chunk_id": f"c{i}", "document_id": f"d{i}", "text": text}
        for i, text in enumerate(
            [
                "Rotate the master key with nimbus keys rotate.",
                "Backups run nightly at two.",
                "Error NV-5041 means the vault is sealed after a restart.",
                "Webhooks retry five times.",
            ]
        )
    ]
    search = HybridSearch(chunks, tmp_path)
    assert ("ragd 1.0" in search.implementation) is with_ragd
    dense = [["c1", "c3", "c0", "c2"]]  # the dense model misses the error code
    fused = search.rank(["vault sealed NV-5041"], dense, 2)
    assert search.keyword(["vault sealed NV-5041"], 3)[0][0] == "c2"
    assert fused[0][0] == "c2" or fused[0][:2] == ["c1", "c2"], fused
    assert "c2" in fused[0] and len(fused[0]) == 2


def test_every_query_is_scored_in_every_set_and_mode(test_set: tuple[Path, Path], tmp_path: Path) -> None:
    """More queries than the deepest cut-off (100): each set and mode scores all of them."""
    _, snapshot = test_set
    many = tmp_path / "many.jsonl"
    records = [
        {"query": f"{q} ({n})", "query_id": f"q{n}_{i}", "positive_id": d, "positive": DOCS[d]}
        for n in range(21)
        for i, (q, d) in enumerate(QUERIES)
    ]
    write_jsonl(many, records)
    questions = tmp_path / "questions.jsonl"
    write_jsonl(
        questions, [{"query": r["query"], "documents": [r["positive_id"].split("_")[0]]} for r in records]
    )
    report = evaluate_models(
        MINILM, MINILM, many, snapshot, questions_path=questions, bootstrap_samples=100, cache_dir=None
    )
    assert [(r["test_set"], r["mode"], r["queries"]) for r in report["retrieval"]] == [
        (s, m, len(records)) for s in ("questions", "synthetic") for m in ("dense", "hybrid")
    ]
    assert all(r["metrics"]["recall@100"]["base"] == 1.0 for r in report["retrieval"])
    assert report["headline"]["test_set"] == "questions" and report["headline"]["queries"] == 126


def test_held_out_passages_and_identical_chunks_shape_the_synthetic_set(
    test_set: tuple[Path, Path], tmp_path: Path
) -> None:
    """A held-out query is searched against its passage without the sentence it was taken from
    (not the copied text), and a chunk identical to the positive counts as an answer too."""
    from ragd_train.evaluate.embeddings import heldout_passages, same_text_qrels
    from ragd_train.snapshot import load_snapshot

    test, snapshot = test_set
    records = [
        {
            "query": DOCS["tls_chunk_0"],  # the sentence itself: found at once when it is still there
            "query_id": "copy",
            "positive_id": "tls_chunk_0",
            "positive": DOCS["tls_chunk_0"],
            "heldout_passage": "Nightly cron jobs handle routine maintenance of the web server.",
        }
    ]
    write_jsonl(test, records)
    assert heldout_passages(test) == {"tls_chunk_0": records[0]["heldout_passage"]}
    held = evaluate_models(MINILM, MINILM, test, snapshot, bootstrap_samples=200)
    write_jsonl(test, [{k: v for k, v in records[0].items() if k != "heldout_passage"}])
    copied = evaluate_models(MINILM, MINILM, test, snapshot, bootstrap_samples=200)
    assert copied["headline"]["base"] == 1.0 and copied["retrieval"][0]["ceiling"]
    assert held["retrieval"][0]["base_mrr@10"] < 1.0 and not held["retrieval"][0]["ceiling"]
    chunks = load_snapshot(snapshot) + [
        {"chunk_id": "twin_chunk_0", "document_id": "twin", "text": DOCS["tls_chunk_0"]}
    ]
    assert same_text_qrels({"q": {"tls_chunk_0": 1}}, chunks) == {"q": {"tls_chunk_0": 1, "twin_chunk_0": 1}}


def test_chat_questions_are_reported_but_never_decide(test_set: tuple[Path, Path], tmp_path: Path) -> None:
    """Held-out chat questions are labelled by ragd's citations (the base's picks): shown, never
    the deciding set, and a loss on them alone does not reject."""
    test, snapshot = test_set
    chat = tmp_path / "chat_questions.jsonl"
    write_jsonl(
        chat,
        [
            {"query": "how do I log in with a security key", "query_id": "c1", "documents": ["mfa"]},
            {"query": "requests per minute", "query_id": "c2", "documents": ["rate", "gone"]},
        ],
    )
    report = evaluate_models(MINILM, MINILM, test, snapshot, chat_path=chat, bootstrap_samples=200)
    rows = [r for r in report["retrieval"] if r["test_set"] == "chat"]
    assert [r["mode"] for r in rows] == ["dense", "hybrid"] and all(r["queries"] == 2 for r in rows)
    assert all("citations" in r["labels"] for r in rows) and report["chat_questions"] == 2
    assert report["headline"]["test_set"] != "chat"
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert evaluate_models(MINILM, MINILM, test, snapshot, chat_path=empty)["chat_questions"] == 0
