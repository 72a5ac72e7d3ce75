"""The user's own questions from ragd's chat history: teacher-labelled training queries and a
held-out set the report shows (written by ragd's own ChatHistory/save_history)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import need_ragd, save_session
from test_queries import Run, make_config

from ragd_train.generate.split import assign_documents
from ragd_train.jsonl_io import read_jsonl
from ragd_train.snapshot import load_snapshot, sync_snapshot

QUESTIONS = [
    "How do I rotate the API keys of a workspace?",
    "What happens to my files when the storage quota is full?",
    "Which identity providers work with single sign-on?",
    "How often are backups taken and how long are they kept?",
    "Can I restore a deleted project from the trash?",
    "Where do I see the audit log of administrator actions?",
    "How do I invite a colleague to a shared folder?",
    "Why does the sync client show a conflict copy?",
]


@pytest.fixture
def snapshot(demo_subset: Path, tmp_path: Path) -> Path:
    path, _ = sync_snapshot("demo", {"source": "documents", "path": str(demo_subset)}, tmp_path / "snap")
    return path


def test_chat_questions_become_training_records_and_a_held_out_set(
    snapshot: Path, tmp_path: Path, tiny_model: Path
) -> None:
    need_ragd()
    chunks = load_snapshot(snapshot)
    history = tmp_path / "chat_history"
    history.mkdir()
    doc = chunks[0]
    cites = [{"document_id": doc["document_id"], "filename": "x.md", "content_preview": doc["text"][:200]}]
    save_session(history, "s1", [(q, cites) for q in QUESTIONS[:5]] + [("thanks", None)])
    save_session(history, "s2", [(q, cites) for q in QUESTIONS[5:]] + [(QUESTIONS[0], cites)])
    before = {p.name: p.read_bytes() for p in history.iterdir()}
    config = make_config(
        tiny_model, generate={"query_generator": "nollm", "chat_eval_share": 0.4, "chat_pairs": 3}
    )
    run = Run(tmp_path / "out", snapshot)
    generation = run.generate(config)
    chat_out = tmp_path / "out" / "chat_questions.jsonl"
    from ragd_train.generate.build import build_training_data

    stats = build_training_data(
        snapshot,
        run.queries,
        run.train,
        run.test,
        config,
        dev_path=run.dev,
        chat_history=history,
        chat_questions_path=chat_out,
        cache_dir=run.cache,
        generation_stats=generation,
    )
    assert {p.name: p.read_bytes() for p in history.iterdir()} == before  # reading writes nothing
    chat = stats["chat_history"]
    assert chat["questions"] == len(QUESTIONS) and chat["skipped"] == {"duplicate": 1, "follow-up": 1}
    held = read_jsonl(chat_out)
    assert chat["held_out"] == len(held) >= 1 and chat["training_questions"] == len(QUESTIONS) - len(held)
    assert all(r["documents"] == [doc["document_id"]] for r in held)
    sides = assign_documents(chunks, config["seed"], 0.2, 0.1)
    records = [r for r in read_jsonl(run.train) if r["generator"] == "chat_history"]
    assert len(records) == 3 * chat["training_questions"] == chat["training_records"]
    by_id = {c["chunk_id"]: c for c in chunks}
    learned = {r["query"] for r in records}
    assert not learned & {r["query"] for r in held}  # a held-out question is never trained on
    for r in records:  # labelled by the teacher over training documents only
        for cid in (r["positive_id"], r["teacher_pair"]["first"]["id"], r["teacher_pair"]["second"]["id"]):
            assert sides[by_id[cid]["document_id"]] == "train"
        assert r["teacher_pair"]["first"]["id"] != r["teacher_pair"]["second"]["id"]
