"""Incremental rebuild after re-indexing: only changed chunks reach the LLM; killed runs keep their work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from helpers import MODEL, responder
from ollama_server import OllamaTestServer

from ragd_train.cli import main
from ragd_train.config import load_config
from ragd_train.generate.build import build_training_data
from ragd_train.generate.queries import generate_queries
from ragd_train.jsonl_io import read_jsonl
from ragd_train.snapshot import load_snapshot, sync_snapshot

ROOT = Path(__file__).resolve().parents[2]


def config_for(url: str, tiny_model: Path) -> dict:
    return load_config(
        overrides={
            "generate": {"query_generator": "ollama", "queries_per_chunk": 2, "hard_negatives_per_query": 3},
            "mining": {"model": str(tiny_model)},
            "ollama": {"host": url, "model": MODEL, "timeout": 5, "retries": 1, "backoff": 0},
        }
    )


def run_all(ws: Path, docs: Path, config: dict) -> tuple[dict, dict]:
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        snap, _ = sync_snapshot("demo", {"source": "documents", "path": str(docs)}, "snapshots")
        gen = generate_queries(snap, "td/queries.jsonl", config, cache_dir="cache")
        stats = build_training_data(
            snap,
            "td/queries.jsonl",
            "td/train.jsonl",
            "td/test.jsonl",
            config,
            stats_path="td/stats.json",
            cache_dir="cache",
            generation_stats=gen,
        )
    finally:
        os.chdir(cwd)
    return gen, stats


def trained(ws: Path, config: dict) -> set[str]:
    """Chunk ids on the training side: the only chunks the LLM writes queries for."""
    from ragd_train.generate.split import assign_documents

    chunks = load_snapshot(ws / "snapshots" / "demo.jsonl")
    g = config["generate"]
    sides = assign_documents(chunks, config["seed"], g["test_ratio"], g["dev_ratio"])
    return {c["chunk_id"] for c in chunks if sides[c["document_id"]] == "train"}


def records(ws: Path) -> dict[str, dict]:
    rows = read_jsonl(ws / "td" / "train.jsonl") + read_jsonl(ws / "td" / "test.jsonl")
    return {r["query_id"]: r for r in rows}


def test_reindex_regenerates_only_changed_chunks(demo_subset: Path, tmp_path: Path, tiny_model: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with OllamaTestServer(models=[MODEL], responder=responder) as srv:
        config = config_for(srv.url, tiny_model)
        gen1, _ = run_all(ws, demo_subset, config)
        first_calls = srv.calls["/api/chat"]
        before_chunks = {c["chunk_id"]: c for c in load_snapshot(ws / "snapshots" / "demo.jsonl")}
        before = records(ws)
        queries_before = (ws / "td" / "queries.jsonl").read_text().splitlines()
        assert gen1["generated"] == len(trained(ws, config)) and gen1["from_cache"] == 0

        # Re-index: edit one document, add one, delete one.
        docs = sorted(demo_subset.glob("*.md"))
        edited, deleted = docs[0], docs[1]
        edited.write_text(
            edited.read_text().replace("\n\n", "\n\nEdited paragraph about quarterly audits.\n\n", 1)
        )
        deleted.unlink()
        (demo_subset / "zz-new.md").write_text(
            "# Webhook retries\n\nFailed webhooks are retried 7 times "
            "with exponential backoff capped at 10 minutes.\n"
        )
        gen2, stats2 = run_all(ws, demo_subset, config)
        after_chunks = {c["chunk_id"]: c for c in load_snapshot(ws / "snapshots" / "demo.jsonl")}
        changed = {
            cid
            for cid, c in after_chunks.items()
            if cid not in before_chunks or before_chunks[cid]["content_hash"] != c["content_hash"]
        }
        gone = set(before_chunks) - set(after_chunks)
        assert changed and gone
        learn = trained(ws, config)
        assert changed & learn

        # Only changed/new training chunks went to the LLM; judge calls only for their new queries.
        second = srv.bodies("/api/chat")[first_calls:]
        query_calls = [b for b in second if not b["messages"][-1]["content"].startswith("Rate how well")]
        assert len(query_calls) == len(changed & learn) == gen2["generated"]
        assert gen2["from_cache"] == len(learn) - len(changed & learn)
        judge_calls = len(second) - len(query_calls)
        assert judge_calls == 2 * len(changed & learn)

        after = records(ws)
        # Deleted chunks are gone from positives and from every negative list.
        for r in after.values():
            assert r["positive_id"] not in gone and not {n["id"] for n in r["negatives"]} & gone
            if "teacher_pair" in r:  # training records (held-out ones have none)
                assert not {r["teacher_pair"]["first"]["id"], r["teacher_pair"]["second"]["id"]} & gone
        # Unchanged chunks keep their queries byte for byte.
        unchanged_ids = {cid for cid in after_chunks if cid not in changed}
        queries_after = (ws / "td" / "queries.jsonl").read_text().splitlines()
        keep = [line for line in queries_before if json.loads(line)["chunk_id"] in unchanged_ids]
        assert (
            keep and [line for line in queries_after if json.loads(line)["chunk_id"] in unchanged_ids] == keep
        )
        # A record is identical unless a changed, new or deleted chunk is involved in it.
        touched = changed | gone
        identical = 0
        for qid, old in before.items():
            new = after.get(qid)
            involved = {old["positive_id"], *(n["id"] for n in old["negatives"])}
            if new is not None:
                involved |= {n["id"] for n in new["negatives"]}
            if involved & touched:
                continue
            # The positive's rank against the whole corpus may move as other chunks change, and so
            # may the teacher's pair: it is drawn from corpus-wide top candidates and z-scores.
            strip = [
                {
                    **{k: v for k, v in r.items() if k != "teacher_pair"},
                    "filter": {k: v for k, v in r["filter"].items() if k != "retriever"},
                }
                for r in (old, new)
            ]
            assert strip[0] == strip[1], qid
            identical += 1
        assert identical > 0
        assert stats2["mining"]["embeddings_from_cache"] >= len(unchanged_ids)


KILL_SCRIPT = """
import os, sys
os.chdir(sys.argv[1])
from ragd_train.config import load_config
from ragd_train.generate.queries import generate_queries
config = load_config(overrides={
    "generate": {"query_generator": "ollama", "queries_per_chunk": 2},
    "ollama": {"host": sys.argv[2], "model": sys.argv[3], "timeout": 30, "retries": 0, "backoff": 0},
})
generate_queries("snap.jsonl", "queries.jsonl", config, cache_dir="cache")
"""


def test_killed_generation_keeps_finished_items(demo_subset: Path, tmp_path: Path, tiny_model: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        snap, _ = sync_snapshot("demo", {"source": "documents", "path": str(demo_subset)}, "snapshots")
    finally:
        os.chdir(cwd)
    (ws / "snap.jsonl").write_bytes(snap.read_bytes() if snap.is_absolute() else (ws / snap).read_bytes())
    all_chunks = len(load_snapshot(ws / "snap.jsonl"))
    n_chunks = len(trained(ws, load_config()))  # the LLM writes the training side's queries

    def slow(body: dict) -> str:
        time.sleep(0.3)
        return responder(body)

    with OllamaTestServer(models=[MODEL], responder=slow) as srv:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(ws), srv.url, MODEL],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 60
        while srv.calls["/api/chat"] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (ws / "queries.jsonl").exists(), "a killed run must not leave a partial output"
        finished = len(list((ws / "cache" / "generations").rglob("*.json")))
        assert 5 <= finished < n_chunks
        srv.responder = responder
        calls_before = srv.calls["/api/chat"]
        config = load_config(
            overrides={
                "generate": {"query_generator": "ollama", "queries_per_chunk": 2},
                "ollama": {"host": srv.url, "model": MODEL, "timeout": 30, "retries": 0, "backoff": 0},
            }
        )
        os.chdir(ws)
        try:
            stats = generate_queries("snap.jsonl", "queries.jsonl", config, cache_dir="cache")
        finally:
            os.chdir(cwd)
        assert srv.calls["/api/chat"] - calls_before == n_chunks - finished
        assert stats["from_cache"] == finished and stats["generated"] == n_chunks - finished
    assert len(read_jsonl(ws / "queries.jsonl")) == 2 * n_chunks + (all_chunks - n_chunks)


def test_cache_stats_and_prune(demo_subset: Path, tmp_path: Path, tiny_model: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with OllamaTestServer(models=[MODEL], responder=responder) as srv:
        config = config_for(srv.url, tiny_model)
        run_all(ws, demo_subset, config)
    learn = trained(ws, config)
    stats = json.loads(
        CliRunner().invoke(main, ["train", "cache", "stats", "--workspace", str(ws), "--json"]).output
    )
    entries = stats["generations"]["entries"]
    assert entries > 0 and len(stats["embeddings"]) == 1
    # Delete a document and re-snapshot: its entries become dead, prune drops exactly those.
    chunks = load_snapshot(ws / "snapshots" / "demo.jsonl")
    doc = next(
        d
        for d in sorted(demo_subset.glob("*.md"))
        if any(c["chunk_id"] in learn and c["document_id"] == d.stem for c in chunks)
    )
    dead = [c for c in chunks if c["document_id"] == doc.stem]
    assert all(c["chunk_id"] in learn for c in dead)  # a training document: the LLM wrote its queries
    doc.unlink()
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        sync_snapshot("demo", {"source": "documents", "path": str(demo_subset)}, "snapshots")
    finally:
        os.chdir(cwd)
    result = CliRunner().invoke(main, ["train", "cache", "prune", "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    after = json.loads(
        CliRunner().invoke(main, ["train", "cache", "stats", "--workspace", str(ws), "--json"]).output
    )
    # Each dead chunk had one query entry and two judge verdicts.
    assert entries - after["generations"]["entries"] == 3 * len(dead)
    (model,) = after["embeddings"].values()
    assert model["shards"] == 1
