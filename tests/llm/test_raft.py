"""RAFT data: oracle fraction p, k distractors from the mined negatives, ragd's layout, quotes."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import read_jsonl, write_jsonl
from ragd_train.llm.raft import (
    ANSWER_PREFIX,
    BEGIN_QUOTE,
    END_QUOTE,
    RaftConfig,
    best_sentence,
    build_raft_data,
    from_display,
    oracle_kept,
    verify_answer,
)
from ragd_train.ragd.prompts import CONTEXT_HEADER, NO_INFORMATION, Source, format_context, system_prompt
from ragd_train.settings import bind

try:
    from tests.ollama_server import OllamaTestServer, free_port
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from ollama_server import OllamaTestServer, free_port

MODEL = "llama3.2:3b"
DOCS = 10  # documents, three chunks each
SENTENCES = [
    "The {topic} service stores its data in region {n}.",
    "Backups of {topic} run every {n} hours and are kept for thirty days.",
    "Only administrators may change the {topic} retention setting.",
]


def chunk(doc: int, index: int) -> dict[str, Any]:
    topic = f"topic{doc}"
    text = f"# {topic.title()} part {index}\n\n" + SENTENCES[index].format(topic=topic, n=doc + index)
    return {
        "chunk_id": f"doc{doc}_chunk_{index}",
        "document_id": f"doc{doc}",
        "text": text,
        "source": f"doc{doc}.md",
        "chunk_index": index,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "metadata": {"filename": f"doc{doc}.md", **({"page_number": index + 1} if doc == 0 else {})},
    }


def record(doc: int, index: int, negatives: list[tuple[int, int]]) -> dict[str, Any]:
    c = chunk(doc, index)
    return {
        "query": f"how often do backups of topic{doc} run" if index == 1 else f"topic{doc} part {index}",
        "query_id": f"q_{doc}_{index}",
        "positive": c["text"],
        "positive_id": c["chunk_id"],
        "negatives": [
            {"id": chunk(d, i)["chunk_id"], "text": chunk(d, i)["text"], "score": 0.5} for d, i in negatives
        ],
        "source_document": c["document_id"],
        "generator": "test",
    }


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    """Snapshot + train (docs 0-7) + test (docs 8-9); doc 7's records have only one mined negative."""
    snap = tmp_path / "snapshot.jsonl"
    write_jsonl(snap, [chunk(d, i) for d in range(DOCS) for i in range(3)])
    train, test = [], []
    for d in range(DOCS):
        for i in range(3):
            mined = [
                ((d + 1) % DOCS, i),
                ((d + 2) % DOCS, (i + 1) % 3),
                ((d + 3) % DOCS, i),
                ((d + 4) % DOCS, 0),
            ]
            (test if d >= 8 else train).append(record(d, i, mined[:1] if d == 7 else mined))
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "test.jsonl", test)
    return {"snapshot": snap, "train": tmp_path / "train.jsonl", "test": tmp_path / "test.jsonl"}


def config(**raft: Any) -> dict[str, Any]:
    return {
        "seed": 7,
        "raft": {"answers": "extractive", **raft},
        "ollama": {
            "host": f"http://127.0.0.1:{free_port()}",
            "model": MODEL,
            "temperature": 0.0,
            "timeout": 5,
            "retries": 0,
            "backoff": 0,
        },
    }


def build(corpus: dict[str, Path], tmp_path: Path, cfg: dict[str, Any]) -> tuple[list, list, dict]:
    out = tmp_path / "out"
    stats = build_raft_data(
        corpus["train"],
        corpus["test"],
        corpus["snapshot"],
        out / "raft.jsonl",
        out / "raft_test.jsonl",
        cfg,
        stats_path=out / "stats.json",
        cache_dir=tmp_path / "cache",
    )
    assert json.loads((out / "stats.json").read_text()) == stats
    return read_jsonl(out / "raft.jsonl"), read_jsonl(out / "raft_test.jsonl"), stats


def context_of(example: dict[str, Any]) -> str:
    user = example["messages"][1]["content"]
    return user.split("Context:\n", 1)[1].split("\n\nQuestion: ", 1)[0]


# ---------------------------------------------------------------- layout


def test_context_is_laid_out_as_ragd_lays_it_out() -> None:
    def src(cid: str, doc: str, name: str, text: str, pages: list[int] | None = None) -> Source:
        return Source(cid, doc, name, text, "distractor", "mined", pages or [])

    context, numbers = format_context(
        [
            src("a1", "a", "alpha.md", "Alpha one."),
            src("b1", "b", "beta.pdf", "Beta.", [4]),
            src("a2", "a", "alpha.md", "Alpha two."),
            src("c1", "c", "gamma.pdf", "Gamma.", [2]),
            src("c2", "c", "gamma.pdf", "Gamma 2.", [5]),
        ]
    )
    assert context == (
        "=== KNOWLEDGE BASE SOURCES ===\n"
        "Cite using [1] or [1;2] for multiple. Ignore (Author, Year) citations within text.\n\n"
        "[1] alpha.md\nAlpha one.\n\n[...]\n\nAlpha two."
        "\n\n---\n\n[2] beta.pdf, page 4\nBeta."
        "\n\n---\n\n[3] gamma.pdf, pages 2-5\nGamma.\n\n[...]\n\nGamma 2."
    )
    assert numbers == {"a1": 1, "a2": 1, "b1": 2, "c1": 3, "c2": 3}


def test_examples_are_chat_records_in_ragds_prompt(corpus: dict[str, Path], tmp_path: Path) -> None:
    train, _, _ = build(corpus, tmp_path, config())
    for ex in train:
        system, user, assistant = ex["messages"]
        assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"]
        assert system["content"] == system_prompt()
        assert user["content"].startswith("Answer the following question based ONLY on the provided context.")
        assert f"\n\nQuestion: {ex['query']}\n\n" in user["content"]
        context = context_of(ex)
        assert context.startswith(CONTEXT_HEADER)
        blocks = context[len(CONTEXT_HEADER) :].split("\n\n---\n\n")
        assert [int(re.match(r"\[(\d+)\] ", b).group(1)) for b in blocks] == list(range(1, len(blocks) + 1))
        for s in ex["sources"]:
            assert re.search(rf"^\[{s['citation']}\] {re.escape(s['filename'])}", context, re.M)
        # the form ragd's chat shows as is: no markers; the marker form checks out
        shown = assistant["content"]
        assert BEGIN_QUOTE not in shown and END_QUOTE not in shown and ANSWER_PREFIX not in shown
        assert verify_answer(from_display(shown), context, len(ex["sources"]), needs_quote=False) is None


# ---------------------------------------------------------------- p, k, distractor source


def test_oracle_kept_in_exactly_p_of_the_examples(corpus: dict[str, Path], tmp_path: Path) -> None:
    train, test, stats = build(corpus, tmp_path, config(oracle_fraction=0.75))
    assert stats["train"]["oracle_present"] == round(0.75 * 24) == sum(e["oracle_present"] for e in train)
    assert stats["train"]["oracle_absent"] == 6 and stats["test"]["examples"] == len(test) == 6
    for ex in train:
        oracle = [s for s in ex["sources"] if s["role"] == "oracle"]
        if ex["oracle_present"]:
            assert [s["id"] for s in oracle] == [ex["oracle_id"]]
            assert ex["oracle_citation"] == oracle[0]["citation"]
        else:
            assert not oracle and ex["oracle_citation"] is None
            assert ex["oracle_id"] not in context_of(ex) and chunk_text(ex["oracle_id"]) not in context_of(ex)

    ids = [f"q{i}" for i in range(100)]
    assert oracle_kept(ids, 0.8, 1) == oracle_kept(list(reversed(ids)), 0.8, 1)  # order-free
    assert len(oracle_kept(ids, 0.8, 1)) == 80 and oracle_kept(ids, 0.8, 1) != oracle_kept(ids, 0.8, 2)
    assert oracle_kept(ids, 0.0, 1) == set() and oracle_kept(ids, 1.0, 1) == set(ids)


def chunk_text(chunk_id: str) -> str:
    doc, index = re.match(r"doc(\d+)_chunk_(\d+)", chunk_id).groups()
    return chunk(int(doc), int(index))["text"]


def test_k_distractors_come_from_the_mined_negatives(corpus: dict[str, Path], tmp_path: Path) -> None:
    train, _, stats = build(corpus, tmp_path, config(distractors=2, oracle_fraction=0.5))
    mined = {r["query_id"]: [n["id"] for n in r["negatives"]] for r in read_jsonl(corpus["train"])}
    for ex in train:
        distractors = [s for s in ex["sources"] if s["role"] == "distractor"]
        want = 2 if ex["oracle_present"] else 3  # the missing oracle is replaced by one more distractor
        assert len(distractors) == want and len(ex["sources"]) == want + ex["oracle_present"]
        from_mined = [s["id"] for s in distractors if s["origin"] == "mined"]
        if ex["source_document"] != "doc7":
            assert set(from_mined) == set(mined[ex["query_id"]][:want])  # the hardest first, all mined
        else:  # one mined negative: topped up with random chunks of other documents
            assert from_mined == mined[ex["query_id"]]
            assert all(s["document_id"] != "doc7" for s in distractors)
    doc7 = [e for e in train if e["source_document"] == "doc7"]
    assert stats["train"]["distractors"]["random"] == sum(
        len(e["sources"]) - e["oracle_present"] - 1 for e in doc7
    )
    assert stats["train"]["distractors"]["mined"] == sum(
        s["origin"] == "mined" for e in train for s in e["sources"]
    )
    # positions are shuffled: the oracle is not always [1]
    assert len({e["oracle_citation"] for e in train if e["oracle_present"]}) > 1


def test_assembly_is_reproducible_and_seeded(corpus: dict[str, Path], tmp_path: Path) -> None:
    a = build(corpus, tmp_path / "a", config())[0]
    b = build(corpus, tmp_path / "b", config())[0]
    assert a == b
    cfg = config()
    cfg["seed"] = 8
    assert build(corpus, tmp_path / "c", cfg)[0] != a


def test_test_split_holds_other_documents(corpus: dict[str, Path], tmp_path: Path) -> None:
    train, test, stats = build(corpus, tmp_path, config())
    assert {e["source_document"] for e in test} == {"doc8", "doc9"}
    assert not {e["source_document"] for e in train} & {"doc8", "doc9"}
    assert all(e["split"] == "test" for e in test) and all(e["split"] == "train" for e in train)
    assert stats["test"]["documents"] == 2


# ---------------------------------------------------------------- answers and quote checks


def test_verify_answer_checks_quotes_citations_and_the_answer_line() -> None:
    context = CONTEXT_HEADER + "[1] a.md\nBackups run every\n  four hours.\n\n---\n\n[2] b.md\nSee [7] there."
    good = (
        f"Per [1]: {BEGIN_QUOTE}Backups run every four hours.{END_QUOTE} [1]\n{ANSWER_PREFIX} Every 4 h [1]"
    )
    assert verify_answer(good, context, 2) is None  # re-wrapped whitespace still counts as verbatim
    assert verify_answer(good.replace("four", "five"), context, 2) == "quote_not_verbatim"
    assert verify_answer(good.replace(BEGIN_QUOTE + "B", "B"), context, 2) == "unbalanced_quote"
    assert verify_answer(f"No quote.\n{ANSWER_PREFIX} x", context, 2) == "no_quote"
    assert verify_answer(good + " [3]", context, 2) == "bad_citation"
    quoted_ref = f"{BEGIN_QUOTE}See [7] there.{END_QUOTE} [2]\n{ANSWER_PREFIX} see [2]"
    assert verify_answer(quoted_ref, context, 2) is None  # a "[7]" inside a quote is the source's text
    assert verify_answer(good.replace(ANSWER_PREFIX, "Answer:"), context, 2) == "no_answer_line"
    assert verify_answer(good + "\nP.S.", context, 2) == "no_answer_line"
    assert verify_answer(f"{BEGIN_QUOTE}{END_QUOTE}\n{ANSWER_PREFIX} x", context, 2) == "quote_not_verbatim"
    assert verify_answer(f"None.\n{ANSWER_PREFIX} {NO_INFORMATION}", context, 2, needs_quote=False) is None


def test_best_sentence_prefers_prose_that_matches_the_query() -> None:
    text = (
        "--group payments\nnimbus policy test --user bob\n```\n\n"
        "## Tokens\n\nTokens expire after 90 days. A token's scope limits what it can do.\n"
        "| col | a |\n"
    )
    assert best_sentence("what limits a token scope", text) == "A token's scope limits what it can do."
    assert best_sentence("nothing in common", text) == "Tokens expire after 90 days."


def test_extractive_answers_quote_the_oracle(corpus: dict[str, Path], tmp_path: Path) -> None:
    train, test, stats = build(corpus, tmp_path, config())
    assert stats["answer_generator"] == "extractive" and stats["train"]["failed"] == {}
    assert stats["train"]["answers"] == {"extractive": 19, "no_oracle": 5}
    for ex in train + test:
        answer = from_display(ex["messages"][2]["content"])
        assert verify_answer(answer, context_of(ex), len(ex["sources"]), needs_quote=False) is None
        if ex["oracle_present"]:
            assert ex["answer_source"] == "extractive"
            quote = answer.split(BEGIN_QUOTE, 1)[1].split(END_QUOTE, 1)[0]
            assert quote in chunk_text(ex["oracle_id"]) and f"[{ex['oracle_citation']}]" in answer
        else:
            assert ex["answer_source"] == "no_oracle" and BEGIN_QUOTE not in answer
            assert answer.endswith(f"{ANSWER_PREFIX} {NO_INFORMATION}")
    backup = next(
        e for e in train if e["query"] == "how often do backups of topic3 run" and e["oracle_present"]
    )
    assert "Backups of topic3 run every 4 hours" in backup["messages"][2]["content"]


def llm_responder(bad_question: str):
    """Quote the oracle's sentence; for ``bad_question`` change a word inside the quote (must fail)."""

    def answer(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        oracle = re.search(r"The answer is in source \[(\d+)\]", prompt).group(1)
        sentence = re.search(rf"^\[{oracle}\] .*\n#.*\n\n(.+?)$", prompt, re.M).group(1)
        quote = sentence.replace(".", " always.") if f"Question: {bad_question}\n" in prompt else sentence
        cite = f"[{oracle}]"
        return (
            f"Source {cite} says {BEGIN_QUOTE}{quote}{END_QUOTE} {cite}.\n{ANSWER_PREFIX} {sentence} {cite}"
        )

    return answer


def test_llm_answers_are_verified_cached_and_counted(corpus: dict[str, Path], tmp_path: Path) -> None:
    records = read_jsonl(corpus["train"])
    bad = sorted(oracle_kept([r["query_id"] for r in records], 0.8, 7))[0]
    bad_question = next(r["query"] for r in records if r["query_id"] == bad)
    with OllamaTestServer(models=[MODEL], responder=llm_responder(bad_question)) as srv:
        cfg = config(answers="ollama")
        cfg["ollama"]["host"] = srv.url
        train, test, stats = build(corpus, tmp_path, cfg)
        calls = srv.calls["/api/chat"]
        again, _, stats2 = build(corpus, tmp_path, cfg)  # the cache serves every passing answer
        retried = srv.calls["/api/chat"] - calls
        bodies = [b for b in srv.bodies("/api/chat") if b]
    assert stats["answer_generator"] == f"llm:{MODEL}" and stats["test"]["failed"] == {}
    # the invented quote fails (after one retry), the example is dropped and counted
    assert stats["train"]["failed"] == {"quote_not_verbatim": 1} and stats["train"]["examples"] == 23
    assert bad not in {e["query_id"] for e in train}
    assert {e["answer_source"] for e in train} == {f"llm:{MODEL}", "no_oracle"}
    for ex in train + test:
        if ex["oracle_present"]:
            answer = from_display(ex["messages"][2]["content"])
            quote = answer.split(BEGIN_QUOTE, 1)[1].split(END_QUOTE, 1)[0]
            assert quote in chunk_text(ex["oracle_id"])
    assert calls == 18 + 2 + 5  # 18 good + 1 bad answered twice (train), 5 with the oracle (test)
    assert again == train and retried == 2 and stats2["llm_calls"]["from_cache"] == calls - 2
    assert all(b["options"]["temperature"] == 0.0 for b in bodies)
    assert {b["options"]["seed"] for b in bodies} == {7, 8}  # the retry changes the seed


def test_without_ollama_auto_is_extractive_and_ollama_fails(
    corpus: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ragd_train"):
        _, _, stats = build(corpus, tmp_path / "a", config(answers="auto"))
    assert stats["answer_generator"] == "extractive"
    assert any("RAFT answers are extractive" in r.getMessage() for r in caplog.records)
    with pytest.raises(RagdTrainError, match="raft.answers: extractive"):
        build(corpus, tmp_path / "b", config(answers="ollama"))


def test_bad_settings_name_their_field() -> None:
    with pytest.raises(InputError, match=r"field 'raft\.oracle_fraction'"):
        bind(RaftConfig, {"raft": {"oracle_fraction": 1.5}})
    with pytest.raises(InputError, match=r"field 'raft\.distractors'"):
        bind(RaftConfig, {"raft": {"distractors": 0}})
    with pytest.raises(InputError, match=r"field 'raft\.answers'"):
        bind(RaftConfig, {"raft": {"answers": "gpt"}})
