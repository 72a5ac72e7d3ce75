"""Real questions from what a ragd user already has: chat sessions written by ragd's own
``ChatHistory``/``save_history`` with ragd's ``Citation`` objects, ``ragd evaluate`` test files read
the way ragd's own ``evaluate`` command reads them, and their citations matched against snapshots
of a real ragd index (built by ``ragd index``) and of a ``documents`` source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import need_ragd, save_session

from ragd_train.errors import InputError
from ragd_train.ragd.questions import (
    CHAT_HISTORY,
    TEST_FILE,
    Cited,
    RealQuestion,
    match_citations,
    question_id,
    read_chat_history,
    read_ragd_test_file,
    skip_reason,
    split_questions,
)

REQUIRE = os.environ.get("RAGD_TRAIN_REQUIRE_RAGD") == "1"
BACKUPS = "# Backups\n\n" + " ".join(
    f"Backup rule {i}: copy the vault to disk {i % 7} every night and compare checksum {i * 37 % 101}."
    for i in range(160)
)
GARDEN = "Tomatoes need six hours of sun a day. Water them in the morning, never at noon. " * 4


def fingerprint(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Size, mtime and sha256 of every file, and every folder, under ``folder``."""
    return {
        str(f.relative_to(folder)): (
            (f.stat().st_size, f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
            if f.is_file()
            else (0, f.stat().st_mtime_ns, "dir")
        )
        for f in sorted(folder.rglob("*"))
    }


def cite(document_id: str, filename: str, chunk_index: int | None, preview: str | None) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "filename": filename,
        "chunk_index": chunk_index,
        "page_number": 3,
        "relevance_score": 0.71,
        "content_preview": preview,
        "title": "not saved by ragd",
        "extra": {"source": "/docs/x"},
    }


def write_sessions(folder: Path) -> None:
    save_session(
        folder,
        "a1b2c3d4",
        [
            ("How often do backups run?", [cite("d" * 16, "backups.md", 2, "Backup rule 9")]),
            ("thanks!", []),
            ("  What   is the restore\ntime?  ", []),
            ("ok", []),
            ("/serch backups", []),
            ("   ", []),
            ("Thanks, and which disk holds rule 12?", [cite("d" * 16, "backups.md", 0, None)]),
            ("tell me more", []),
            ("Why?", []),
            ("backups?", []),
        ],
    )
    save_session(
        folder,
        "b9",
        [
            ("how often do BACKUPS   run?", [cite("e" * 16, "other.md", 0, "x")]),  # asked before
            ("Which plants need full sun?", None),  # Ollama failed: no answer saved
            ("When should tomatoes be watered?", [cite("f" * 16, "garden.txt", 0, "Tomatoes")]),
        ],
    )


# ------------------------------------------------------------------ chat history


def test_chat_history_questions_citations_skips_and_duplicates(tmp_path: Path) -> None:
    need_ragd()
    write_sessions(tmp_path)
    got = read_chat_history(tmp_path)
    assert [q.query for q in got] == [
        "How often do backups run?",
        "What   is the restore\ntime?",
        "Thanks, and which disk holds rule 12?",
        "Which plants need full sun?",
        "When should tomatoes be watered?",
    ]
    first = got[0]
    assert first == RealQuestion(
        query="How often do backups run?",
        source=CHAT_HISTORY,
        file=str(tmp_path / "a1b2c3d4.json"),
        position=0,
        cited=(Cited("d" * 16, "backups.md", 2, 3, "Backup rule 9", 0.71),),
        question_id=question_id("How often do backups run?"),
    )
    assert [q.position for q in got] == [0, 4, 12, 2, 3]
    assert got[1].cited == () and got[3].cited == ()  # the next message is a question, not an answer
    assert got[2].cited[0].preview is None and got[4].file.endswith("b9.json")
    assert got.skipped == {"follow-up": 4, "too short": 1, "command": 1, "empty": 1, "duplicate": 1}
    assert got.warnings == []
    # one id per question, whichever session or file asked it
    assert question_id("How often do backups run?") == question_id("how often do BACKUPS   run?")
    assert len({q.question_id for q in got}) == len(got)


def test_trivial_messages() -> None:
    for text, reason in [
        ("", "empty"),
        ("thanks", "follow-up"),
        ("Thank you very much!", "follow-up"),
        ("ok, tell me more", "follow-up"),
        ("thanks for that", "follow-up"),
        ("Can you elaborate?", "follow-up"),
        ("backups?", "too short"),
        ("RAG vs BM25", None),
        ("Good backup practices", None),
        ("Right to erasure?", None),
        ("Great, thanks!", "follow-up"),
        ("Perfect.", "follow-up"),
        ("ok so what is the retention period", None),
        ("What's the retention period?", None),
        ("备份多久运行一次", None),  # no spaces: each ideograph is a word
        ("/help", "command"),
    ]:
        assert skip_reason(text) == reason, text


DAMAGED: dict[str, bytes] = {
    "c_truncated.json": b'{"session_id": "c", "messages": [{"role": "user", "content": "How do',
    "d_list.json": b"[]",
    "e_role.json": b'{"messages": [{"role": "robot", "content": "How do backups run?"}]}',
    "f_nocontent.json": b'{"messages": [{"role": "user", "text": "How do backups run?"}]}',
    "g_time.json": b'{"messages": [{"role": "user", "content": "How do they run?", "timestamp": "noon"}]}',
    "h_citations.json": b'{"messages": [{"role": "assistant", "content": "x", "citations": "a.md"}]}',
    "i_latin1.json": '{"messages": [{"role": "user", "content": "Où sont les sauvegardes?"}]}'.encode(
        "latin-1"
    ),
    "j_number.json": b'{"messages": [{"role": "user", "content": 42}]}',
    "k_null.json": b'{"messages": null}',
    "l_created.json": b'{"created_at": "last week", "messages": []}',
    "m_empty.json": b"",
}


@pytest.fixture
def history_dir(tmp_path: Path) -> Path:
    need_ragd()
    folder = tmp_path / "home" / ".ragd" / "chat_history"
    folder.mkdir(parents=True)
    write_sessions(folder)
    for name, data in DAMAGED.items():
        (folder / name).write_bytes(data)
    (folder / "n_no_messages.json").write_text('{"session_id": "n"}')  # ragd reads it: no messages
    (folder / "notes.txt").write_text("How often do backups run? (not a session)")
    return folder


def test_damaged_sessions_are_skipped_with_one_line_warnings(
    history_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_ragd()
    with caplog.at_level(logging.WARNING, logger="ragd_train"):
        got = read_chat_history(history_dir)
    assert len(got) == 5 and got.skipped["damaged file"] == len(DAMAGED)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == got.warnings and len(warned) == len(DAMAGED)
    for message, name in zip(warned, sorted(DAMAGED), strict=True):
        assert message.startswith(f"{history_dir / name}: skipped") and "\n" not in message
    assert "invalid JSON" in warned[0] and "not UTF-8" in warned[6] and "'content'" in warned[3]


def test_the_plain_reader_gives_what_ragds_loader_gives(history_dir: Path) -> None:
    """Without ragd the same questions, skips and warnings come out of the same files."""
    need_ragd()
    with_ragd = read_chat_history(history_dir, use_ragd=True)
    plain = read_chat_history(history_dir, use_ragd=False)
    assert list(with_ragd) == list(plain) and len(plain) == 5
    assert with_ragd.skipped == plain.skipped
    assert with_ragd.warnings == plain.warnings


def test_reading_writes_nothing(history_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_ragd()
    home = history_dir.parent.parent
    monkeypatch.setenv("HOME", str(home))
    os.chmod(history_dir / "a1b2c3d4.json", 0o444)
    before = fingerprint(home)
    for use_ragd in (True, False):
        assert len(read_chat_history(use_ragd=use_ragd)) == 5  # default: ragd's ~/.ragd/chat_history
    assert fingerprint(home) == before
    shutil.rmtree(home / ".ragd")
    assert read_chat_history() == [] and not (home / ".ragd").exists()  # never created


def test_plain_reader_without_ragd(tmp_path: Path) -> None:
    """The fallback reads ChatHistory.to_dict's format as written without ragd."""
    session = {
        "session_id": "s1",
        "created_at": "2025-12-01T10:00:00",
        "messages": [
            {"role": "system", "content": "You are ragd.", "timestamp": "2025-12-01T10:00:00"},
            {"role": "user", "content": "Where is the vault copied to?", "metadata": {}},
            {"role": "system", "content": "(context trimmed)"},
            {
                "role": "assistant",
                "content": "To disk 3 [1].",
                "citations": [{"document_id": "abc", "filename": "backups.md", "chunk_index": "2"}],
            },
        ],
        "metadata": {},
    }
    (tmp_path / "s1.json").write_text(json.dumps(session))
    (got,) = read_chat_history(tmp_path, use_ragd=False)
    assert got.position == 1 and got.cited == (Cited("abc", "backups.md"),)  # "2" is no index
    assert read_chat_history(tmp_path / "missing") == []
    with pytest.raises(InputError, match="found a file"):
        read_chat_history(tmp_path / "s1.json")


# ------------------------------------------------------------------ ragd test files


class _Loaded(Exception):
    pass


def ragd_loads(path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The queries ragd's own ``ragd evaluate --test-file`` loads from ``path`` (its Evaluator is
    replaced by a recorder, so nothing is searched)."""
    import ragd.config
    import ragd.evaluation
    from ragd.ui.cli.commands.quality import evaluate_command

    loaded: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, **_: Any) -> None:
            pass

        def evaluate_batch(self, queries: list[dict[str, Any]]) -> None:
            loaded.extend(queries)
            raise _Loaded

        def close(self) -> None:
            pass

    monkeypatch.setattr(ragd.evaluation, "Evaluator", Recorder)
    monkeypatch.setattr(ragd.config, "load_config", ragd.config.create_default_config)
    with pytest.raises(_Loaded):
        evaluate_command(test_file=path, save=False, no_color=True)
    return loaded


def test_test_files_are_read_as_ragd_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need_ragd()
    monkeypatch.setenv("HOME", str(tmp_path))
    yaml_file = tmp_path / "queries.yaml"
    yaml_file.write_text(
        "# ragd evaluate --test-file queries.yaml\n"
        "evaluations:\n"
        "  - query: What is machine learning?\n"
        "    expected_answer: Machine learning is a subset of AI.\n"
        "    expected_docs: [3f2a9c1b7d4e8a06, notes.md]\n"
        "  - query: '  How does OAuth work? '\n"
        "    expected: OAuth is an authorization framework.\n"  # F-013's documented key
        "    tags: [security]\n"
        "  - query: what is machine   learning?\n"
    )
    json_file = tmp_path / "queries.json"
    json_file.write_text(
        json.dumps({"queries": [{"query": "Which disk holds rule 12?", "expected_docs": []}]})
    )
    got = read_ragd_test_file(yaml_file)
    assert [q.query for q in got] == [d["query"].strip() for d in ragd_loads(yaml_file, monkeypatch)][:2]
    assert got[0].cited == (Cited("3f2a9c1b7d4e8a06"), Cited("notes.md"))
    assert got[0].expected_answer == "Machine learning is a subset of AI."
    assert got[1].expected_answer == "OAuth is an authorization framework." and got[1].cited == ()
    assert (got[0].source, got[0].file, got[1].position) == (TEST_FILE, str(yaml_file), 1)
    assert got.skipped == {"duplicate": 1}
    (only,) = read_ragd_test_file(json_file)
    assert [only.query] == [d["query"] for d in ragd_loads(json_file, monkeypatch)]


@pytest.mark.parametrize(
    ("name", "text", "message", "line", "field"),
    [
        ("bad.yaml", "evaluations:\n  - query: [unclosed\n", "invalid YAML", 3, None),
        ("bad.json", '{"queries": [\n', "invalid JSON", 2, None),
        ("list.json", '[{"query": "What is RAG?"}]', "expected a mapping", 1, None),
        ("empty.yaml", "evaluations: []\n", "no queries found", 1, "evaluations"),
        ("none.yml", "# nothing yet\n", "expected a mapping", None, None),
        ("item.yaml", "queries:\n  - What is RAG?\n", "expected a mapping with a 'query'", 2, "queries[0]"),
        (
            "missing.yaml",
            "evaluations:\n  - query: What is RAG?\n  - expected_answer: foo\n",
            "missing required field",
            3,
            "evaluations[1].query",
        ),
        ("int.json", '{\n "queries": [\n  {"query": 42}\n ]\n}', "expected a string", 3, "queries[0].query"),
        ("blank.yaml", "queries:\n- query: '  '\n", "empty query", 2, "queries[0].query"),
        (
            "docs.yaml",
            "evaluations:\n  - query: What is RAG?\n    expected_docs: notes.md\n",
            "expected a list of document ids",
            3,
            "evaluations[0].expected_docs",
        ),
        (
            "docnull.yaml",
            "evaluations:\n  - query: What is RAG?\n    expected_docs:\n      - a.md\n      -\n",
            "expected a document id",
            5,
            "evaluations[0].expected_docs[1]",
        ),
    ],
)
def test_bad_test_files_are_one_line_errors(
    tmp_path: Path, name: str, text: str, message: str, line: int | None, field: str | None
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as err:
        read_ragd_test_file(path)
    assert message in err.value.reason and "\n" not in str(err.value)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)


def test_unreadable_test_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_ragd_test_file(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="found a folder"):
        read_ragd_test_file(tmp_path)
    (tmp_path / "latin.json").write_bytes('{"queries": [{"query": "Où?"}]}'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_ragd_test_file(tmp_path / "latin.json")


# ------------------------------------------------------------------ citations on snapshots


@pytest.fixture(scope="module")
def ragd_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real ragd index of two documents (one of several chunks), made by ``ragd index``."""
    need_ragd()
    from ragd_home import prepare_ragd_home, run_ragd

    root = tmp_path_factory.mktemp("ragd-index")
    home, docs = root / "home", root / "docs"
    docs.mkdir()
    (docs / "backups.md").write_text(BACKUPS)
    (docs / "garden.txt").write_text(GARDEN)
    env = prepare_ragd_home(home)
    run_ragd(["index", str(docs)], env, cwd=home)
    return home, docs


def stored_rows(chroma: Path, tmp: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Every chunk row ragd stored (id, text, metadata), read from a copy (Chroma writes where it opens)."""
    import chromadb
    from chromadb.config import Settings

    copy = tmp / "chroma-copy"
    shutil.copytree(chroma, copy)
    client = chromadb.PersistentClient(path=str(copy), settings=Settings(anonymized_telemetry=False))
    got = client.get_collection("ragd_documents").get(include=["documents", "metadatas"])
    rows = zip(got["ids"], got["documents"], got["metadatas"], strict=True)
    return sorted(rows, key=lambda r: (r[2]["document_id"], r[2]["chunk_index"]))


def ragd_citations(rows: list[tuple[str, str, dict[str, Any]]], keyword_only: bool = False) -> list[Any]:
    """The citations ragd's chat shows for these search hits: ragd's own HybridSearchResult (built
    as its semantic search builds them, or as a keyword-only hit: no metadata, chunk_index 0, no
    name) through ragd's own ``build_context_from_results``."""
    from ragd.chat.context import build_context_from_results
    from ragd.search.hybrid import HybridSearchResult

    hits = [
        HybridSearchResult(
            content=text,
            combined_score=0.9,
            semantic_score=None if keyword_only else 0.9,
            keyword_score=12.0 if keyword_only else None,
            semantic_rank=None if keyword_only else rank,
            keyword_rank=rank if keyword_only else None,
            rrf_score=0.9,
            document_id=meta["document_id"],
            document_name="" if keyword_only else meta["filename"],
            chunk_id=chunk_id,
            chunk_index=0 if keyword_only else meta["chunk_index"],
            metadata={} if keyword_only else meta,
        )
        for rank, (chunk_id, text, meta) in enumerate(rows, start=1)
    ]
    return build_context_from_results(hits, max_tokens=100_000, reserved_tokens=0)[1]


def test_citations_match_a_ragd_index_snapshot(ragd_index: tuple[Path, Path], tmp_path: Path) -> None:
    from ragd.citation import Citation

    from ragd_train.snapshot import read_source

    home, _ = ragd_index
    rows = stored_rows(home / ".ragd" / "chroma", tmp_path)
    backups = [r for r in rows if r[2]["filename"] == "backups.md"]
    garden = [r for r in rows if r[2]["filename"] == "garden.txt"]
    assert len(backups) >= 3 and len(garden) == 1
    b_doc, g_doc = backups[0][2]["document_id"], garden[0][2]["document_id"]
    gone = Citation(document_id="0123456789abcdef", filename="gone.pdf", chunk_index=0, content_preview="x")
    folder = tmp_path / "chat_history"
    save_session(
        folder,
        "s1",
        [
            ("Which disk gets rule 40 of the backups?", ragd_citations([backups[2], backups[1], garden[0]])),
            ("What does rule 150 of the backups say?", ragd_citations([backups[-1]], keyword_only=True)),
            ("Which file described the old vault?", [gone]),
            ("When should tomatoes be watered?", [gone, *ragd_citations(garden)]),
        ],
    )
    questions = read_chat_history(folder)
    (cited,) = questions[1].cited
    assert (cited.filename, cited.chunk_index) == ("Unknown", 0)  # what ragd keeps for a keyword-only hit
    chunks = read_source("ragd", {"path": str(home / ".ragd")})
    first, keyword, missing, mixed = match_citations(questions, chunks)
    # one citation per document (ragd groups chunks by document): its best chunk is exact
    assert first.document_ids == {b_doc, g_doc} and first.via == {"document_id"}
    assert first.chunk_ids == {backups[2][0], garden[0][0]} and first.in_index
    # chunk_index 0 is ragd's placeholder there: the preview finds the real chunk
    assert keyword.document_ids == {b_doc} and keyword.chunk_ids == {backups[-1][0]}
    assert not missing.in_index and missing.unmatched == questions[2].cited
    assert mixed.document_ids == {g_doc} and mixed.unmatched == (questions[3].cited[0],)

    # a test file's expected_docs name ragd document ids or files
    test_file = tmp_path / "q.yaml"
    test_file.write_text(
        "evaluations:\n- query: How often do backups run?\n"
        f"  expected_docs: ['{g_doc}', backups.md, gone.pdf]\n"
    )
    (expected,) = match_citations(read_ragd_test_file(test_file), chunks)
    assert expected.document_ids == {g_doc, b_doc} and expected.via == {"document_id", "filename"}
    assert expected.chunk_ids == set() and [c.document_id for c in expected.unmatched] == ["gone.pdf"]


def test_ragd_citations_match_a_documents_snapshot(ragd_index: tuple[Path, Path], tmp_path: Path) -> None:
    """A ``documents`` source chunks the same files itself: other ids, matched by file name, and the
    chunk holding the cited preview."""
    from ragd_train.snapshot import read_source

    home, docs = ragd_index
    rows = stored_rows(home / ".ragd" / "chroma", tmp_path)
    backups = [r for r in rows if r[2]["filename"] == "backups.md"]
    save_session(
        tmp_path / "h", "s", [("Which disk gets rule 40 of the backups?", ragd_citations(backups[1:2]))]
    )
    chunks = read_source("documents", {"path": str(docs), "glob": ["*.md", "*.txt"], "chunk_size": 50_000})
    (match,) = match_citations(read_chat_history(tmp_path / "h"), chunks)
    assert match.document_ids == {"backups"} and match.via == {"filename"}
    assert match.chunk_ids == {"backups_chunk_0"}


def test_matching_without_ragd() -> None:
    """Snapshot records alone: ids, file names, a preview to pick between files of one name."""
    from ragd_train.snapshot import make_chunk

    chunks = [
        make_chunk(
            "a__notes_chunk_0", "a__notes", "Alpha notes: the vault is copied nightly.", "a/notes.md", 0
        ),
        make_chunk(
            "b__notes_chunk_0", "b__notes", "Beta notes: tokens expire after thirty days.", "b/notes.md", 0
        ),
        make_chunk(
            "b__notes_chunk_1", "b__notes", "Beta, part two: refresh tokens last a year.", "b/notes.md", 1
        ),
    ]

    def ask(*cited: Cited) -> RealQuestion:
        return RealQuestion("q words here", CHAT_HISTORY, "f", 0, cited, "id")

    by_name, by_preview, by_path, by_content, nothing = match_citations(
        [
            ask(Cited(filename="notes.md")),
            ask(Cited(filename="notes.md", chunk_index=1, preview="Beta, part two: refresh tokens")),
            ask(Cited("b/notes.md")),
            ask(Cited("0" * 16, "Unknown", 0, preview="Alpha notes: the vault is copied nightly.")),
            ask(),
        ],
        chunks,
    )
    assert by_name.document_ids == {"a__notes", "b__notes"} and by_name.chunk_ids == set()
    assert by_preview.document_ids == {"b__notes"} and by_preview.chunk_ids == {"b__notes_chunk_1"}
    assert by_path.document_ids == {"b__notes"} and by_path.via == {"filename"}
    assert by_content.document_ids == set()  # a 41-character preview is too short to search for alone
    assert not nothing.in_index and nothing.unmatched == ()


# ------------------------------------------------------------------ split


def test_split_is_stable_when_questions_are_added() -> None:
    def questions(start: int, stop: int) -> list[RealQuestion]:
        return [
            RealQuestion(
                f"question number {i}?", CHAT_HISTORY, "f", i, (), question_id(f"question number {i}?")
            )
            for i in range(start, stop)
        ]

    old = questions(0, 300)
    train, held = split_questions(old, 0.2, seed=13)
    assert 30 < len(held) < 90 and len(train) + len(held) == 300
    assert [q for q in old if q in train] == train  # order kept
    assert split_questions(list(reversed(old)), 0.2, 13)[1] == list(reversed(held))
    more_train, more_held = split_questions(questions(300, 500) + old, 0.2, seed=13)
    assert {q.question_id for q in held} <= {q.question_id for q in more_held}
    assert {q.question_id for q in train} <= {q.question_id for q in more_train}
    assert split_questions(old, 0.2, seed=14)[1] != held
    records = [{"question_id": q.question_id} for q in old]
    assert [r["question_id"] for r in split_questions(records, 0.2, 13)[1]] == [q.question_id for q in held]
    assert split_questions(old, 0, 13) == (old, []) and split_questions(old, 1, 13) == ([], old)
    for bad in (-0.1, 1.5, "0.2", True):
        with pytest.raises(InputError, match="eval_share"):
            split_questions(old, bad, 13)  # type: ignore[arg-type]
