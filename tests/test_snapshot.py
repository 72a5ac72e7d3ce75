"""Index snapshots from every source, change-only syncing, strict errors, and chunking."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from ragd_train.chunking import chunk_text
from ragd_train.errors import InputError
from ragd_train.snapshot import (
    SOURCES,
    content_hash,
    load_snapshot,
    read_source,
    sync_snapshot,
    validate_chunks,
)

SNAPSHOT_KEYS = ["chunk_id", "document_id", "text", "source", "chunk_index", "content_hash", "metadata"]
OLD = 1_000_000_000  # an mtime far in the past, so any rewrite is visible


# ---------------------------------------------------------------- helpers


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ragd_collection(data_dir: Path, name: str = "ragd_documents"):
    """A collection in exactly ragd's layout: <data dir>/chroma, cosine space."""
    import chromadb
    from chromadb.config import Settings

    # Same settings and path string as the reader: chromadb refuses a second client
    # on one path with different settings within a process.
    chroma = (data_dir / "chroma").resolve()
    client = chromadb.PersistentClient(path=str(chroma), settings=Settings(anonymized_telemetry=False))
    client.get_or_create_collection("ragd_metadata")
    return client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})


def index_document(collection, document_id: str, chunks: list[str], source: str | None = None) -> None:
    """Add one document's chunks as ragd does, with precomputed embeddings (no model)."""
    source = source or f"/home/user/notes/{document_id}.md"
    metadatas = []
    offset = 0
    for i, chunk in enumerate(chunks):
        metadatas.append(
            {
                "source": source,
                "filename": Path(source).name,
                "chunk_index": i,
                "start_char": offset,
                "end_char": offset + len(chunk),
                "document_id": document_id,
            }
        )
        offset += len(chunk) + 2
    collection.upsert(
        ids=[f"{document_id}_chunk_{i}" for i in range(len(chunks))],
        documents=chunks,
        embeddings=[[float(i + 1), 0.5, 0.25, float(len(chunk) % 7)] for i, chunk in enumerate(chunks)],
        metadatas=metadatas,
    )


def write_jsonl_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def record(chunk_id: str, document_id: str, text: str, **extra) -> str:
    return json.dumps({"chunk_id": chunk_id, "document_id": document_id, "text": text, **extra})


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A documents folder: Markdown with a heading, plain text, a nested file, noise."""
    root = tmp_path / "docs"
    (root / "guides" / "deep").mkdir(parents=True)
    (root / ".obsidian").mkdir()
    (root / "intro.md").write_text(
        "Some preface.\n\n# Getting Started\n\nInstall the tool. Then run it.\n", encoding="utf-8"
    )
    (root / "notes.txt").write_text("# not a title in a .txt file\nPlain notes here.\n", encoding="utf-8")
    (root / "guides" / "deep" / "setup.md").write_text(
        "```bash\n# a shell comment, not a heading\n```\n\nConfigure the thing.\n", encoding="utf-8"
    )
    (root / ".obsidian" / "hidden.md").write_text("# Hidden\n\nskipped\n", encoding="utf-8")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    return root


def assert_no_snapshot(out_dir: Path) -> None:
    """Nothing (not even a temp file) was left in ``out_dir``."""
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------- ragd


def test_ragd_source_reads_a_real_chromadb_index(tmp_path: Path) -> None:
    data_dir = tmp_path / "ragd"
    collection = ragd_collection(data_dir)
    index_document(collection, "doc_b", ["Bravo one.", "Bravo two."])
    index_document(collection, "doc_a", ["Alpha one.", "Alpha two.", "Alpha three."])

    chunks = read_source("ragd", {"source": "ragd", "path": str(data_dir)})

    assert [c["chunk_id"] for c in chunks] == [
        "doc_a_chunk_0",
        "doc_a_chunk_1",
        "doc_a_chunk_2",
        "doc_b_chunk_0",
        "doc_b_chunk_1",
    ]
    first = chunks[0]
    assert list(first) == SNAPSHOT_KEYS
    assert first["document_id"] == "doc_a"
    assert first["text"] == "Alpha one."
    assert first["source"] == "/home/user/notes/doc_a.md"
    assert first["chunk_index"] == 0
    assert first["content_hash"] == sha("Alpha one.")
    assert first["metadata"] == {"end_char": 10, "filename": "doc_a.md", "start_char": 0}
    assert chunks[2]["chunk_index"] == 2


def test_ragd_source_falls_back_to_the_id_and_filename(tmp_path: Path) -> None:
    data_dir = tmp_path / "ragd"
    collection = ragd_collection(data_dir)
    collection.add(
        ids=["report_2024_chunk_3"],
        documents=["Numbers went up."],
        embeddings=[[0.1, 0.2, 0.3, 0.4]],
        metadatas=[{"filename": "report.pdf", "title": "Report"}],
    )

    (chunk,) = read_source("ragd", {"source": "ragd", "path": str(data_dir)})

    assert chunk["document_id"] == "report_2024"
    assert chunk["chunk_index"] == 3
    assert chunk["source"] == "report.pdf"
    assert chunk["metadata"] == {"filename": "report.pdf", "title": "Report"}


def test_ragd_source_pages_through_large_collections(tmp_path: Path) -> None:
    data_dir = tmp_path / "ragd"
    collection = ragd_collection(data_dir)
    texts = [f"Chunk number {i}." for i in range(2345)]
    index_document(collection, "big", texts)

    chunks = read_source("ragd", {"source": "ragd", "path": str(data_dir)})

    assert len(chunks) == 2345
    assert [c["chunk_index"] for c in chunks] == list(range(2345))
    assert len({c["chunk_id"] for c in chunks}) == 2345


def test_ragd_source_accepts_the_chroma_dir_a_relative_path_and_a_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "ragd"
    index_document(ragd_collection(data_dir, "other"), "doc", ["Other text."])
    monkeypatch.chdir(tmp_path)

    chunks = read_source("ragd", {"source": "ragd", "path": "ragd/chroma", "collection": "other"})

    assert [c["chunk_id"] for c in chunks] == ["doc_chunk_0"]


def test_ragd_source_errors_name_the_path_and_field(tmp_path: Path) -> None:
    empty = tmp_path / "not-ragd"
    empty.mkdir()
    with pytest.raises(InputError) as exc:
        read_source("ragd", {"source": "ragd", "path": str(empty)})
    assert one_line(exc).startswith(f"{empty}: field 'path': no ragd index")
    assert not (empty / "chroma").exists()  # the reader never creates an index

    data_dir = tmp_path / "ragd"
    index_document(ragd_collection(data_dir), "doc", ["Text."])
    with pytest.raises(InputError) as exc:
        read_source("ragd", {"source": "ragd", "path": str(data_dir), "collection": "nope"})
    message = one_line(exc)
    assert str((data_dir / "chroma").resolve()) in message
    assert "field 'collection'" in message and "ragd_documents" in message


def test_ragd_empty_text_names_the_chunk(tmp_path: Path) -> None:
    data_dir = tmp_path / "ragd"
    collection = ragd_collection(data_dir)
    index_document(collection, "doc", ["Fine.", "   "])
    out = tmp_path / "snapshots"

    with pytest.raises(InputError) as exc:
        sync_snapshot("idx", {"source": "ragd", "path": str(data_dir)}, out)

    assert "field 'text'" in one_line(exc) and "'doc_chunk_1'" in one_line(exc)
    assert_no_snapshot(out)


def test_sync_from_ragd_rewrites_only_after_a_real_reindex(tmp_path: Path) -> None:
    data_dir = tmp_path / "ragd"
    collection = ragd_collection(data_dir)
    index_document(collection, "doc_a", ["Alpha one.", "Alpha two."])
    cfg = {"source": "ragd", "path": str(data_dir)}
    out = tmp_path / "snapshots"

    path, changed = sync_snapshot("idx", cfg, out)
    assert changed
    os.utime(path, (OLD, OLD))

    # Re-indexing the same content (a no-change `ragd index`) leaves the snapshot alone.
    index_document(collection, "doc_a", ["Alpha one.", "Alpha two."])
    assert sync_snapshot("idx", cfg, out) == (path, False)
    assert path.stat().st_mtime == OLD

    index_document(collection, "doc_a", ["Alpha one, edited.", "Alpha two."])
    assert sync_snapshot("idx", cfg, out) == (path, True)
    assert path.stat().st_mtime != OLD
    assert load_snapshot(path)[0]["text"] == "Alpha one, edited."


# -------------------------------------------------------------- documents


def test_documents_source_chunks_md_and_txt_recursively(docs: Path) -> None:
    chunks = read_source("documents", {"source": "documents", "path": str(docs)})

    by_doc = {c["document_id"]: c for c in chunks}
    assert sorted(by_doc) == ["guides__deep__setup", "intro", "notes"]  # hidden and .png skipped
    intro = by_doc["intro"]
    assert intro["chunk_id"] == "intro_chunk_0"
    assert intro["source"] == "intro.md"
    assert intro["metadata"]["title"] == "Getting Started"
    assert intro["metadata"]["filename"] == "intro.md"
    assert by_doc["notes"]["metadata"]["title"] == "notes"  # '# ' in a .txt is not a heading
    assert by_doc["guides__deep__setup"]["metadata"]["title"] == "setup"  # comment in a code fence
    assert by_doc["guides__deep__setup"]["source"] == "guides/deep/setup.md"
    for chunk in chunks:
        original = (docs / chunk["source"]).read_text(encoding="utf-8")
        meta = chunk["metadata"]
        assert original[meta["start_char"] : meta["end_char"]] == chunk["text"]
        assert chunk["content_hash"] == sha(chunk["text"])


def test_documents_source_honours_chunking_glob_and_limit(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    paragraphs = [f"Paragraph {i} says something useful about topic {i}." for i in range(12)]
    (root / "long.md").write_text("# Long\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
    (root / "b.txt").write_text("Bee.\n", encoding="utf-8")
    (root / "a.txt").write_text("Ay.\n", encoding="utf-8")
    cfg = {"source": "documents", "path": str(root), "chunk_size": 120, "chunk_overlap": 20}

    chunks = [c for c in read_source("documents", cfg) if c["document_id"] == "long"]
    assert len(chunks) > 3
    assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert all(len(c["text"]) <= 120 for c in chunks)
    assert all(c["metadata"]["title"] == "Long" for c in chunks)

    only_txt = read_source("documents", {**cfg, "glob": ["*.txt"]})
    assert [c["document_id"] for c in only_txt] == ["a", "b"]
    limited = read_source("documents", {**cfg, "limit": 2})
    assert sorted({c["document_id"] for c in limited}) == ["a", "b"]
    (root / "z.txt").write_bytes(b"\xff not UTF-8, but past the limit")
    assert read_source("documents", {**cfg, "limit": 2}) == limited


def test_documents_source_resolves_relative_paths_against_cwd(
    docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(docs.parent)
    chunks = read_source("documents", {"source": "documents", "path": "docs"})
    assert {c["document_id"] for c in chunks} == {"intro", "notes", "guides__deep__setup"}


def test_non_utf8_document_names_the_file_and_line(docs: Path, tmp_path: Path) -> None:
    bad = docs / "guides" / "latin1.md"
    bad.write_bytes("# Caf\u00e9\n\nfine line\nna\u00efve\n".encode("latin-1"))
    out = tmp_path / "snapshots"

    with pytest.raises(InputError) as exc:
        sync_snapshot("docs", {"source": "documents", "path": str(docs)}, out)

    assert one_line(exc).startswith(f"{bad}:1: not valid UTF-8")
    assert exc.value.path == str(bad) and exc.value.line == 1
    assert_no_snapshot(out)


def test_documents_with_clashing_ids_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("Markdown.\n", encoding="utf-8")
    (root / "a.txt").write_text("Text.\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        read_source("documents", {"source": "documents", "path": str(root)})
    assert one_line(exc).startswith(f"{root / 'a.txt'}: document_id 'a'")


def test_empty_documents_folder_is_an_empty_corpus(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "blank.md").write_text("  \n\n", encoding="utf-8")
    out = tmp_path / "snapshots"

    with pytest.raises(InputError) as exc:
        sync_snapshot("empty", {"source": "documents", "path": str(root)}, out)

    assert one_line(exc) == f"{root}: no chunks: the corpus is empty"
    assert_no_snapshot(out)


def test_bad_chunk_settings_name_the_field(docs: Path) -> None:
    cfg = {"source": "documents", "path": str(docs), "chunk_size": 100, "chunk_overlap": 100}
    with pytest.raises(InputError, match="field 'chunk_overlap'"):
        read_source("documents", cfg)


# ------------------------------------------------------------------ jsonl


def test_jsonl_source_fills_in_derived_fields(tmp_path: Path) -> None:
    path = write_jsonl_lines(
        tmp_path / "chunks.jsonl",
        [
            record("b_chunk_1", "b", "Second of b.", title="B"),
            "",
            record("b_chunk_0", "b", "First of b.", source="b.md", content_hash=sha("First of b.")),
            record("a-only", "a", "Only a.", metadata={"filename": "a.txt", "page": 3}),
        ],
    )

    chunks = read_source("jsonl", {"source": "jsonl", "path": str(path)})

    assert [c["chunk_id"] for c in chunks] == ["a-only", "b_chunk_0", "b_chunk_1"]
    a, b0, b1 = chunks
    assert list(a) == SNAPSHOT_KEYS
    assert (a["chunk_index"], a["source"], a["metadata"]) == (0, "a.txt", {"filename": "a.txt", "page": 3})
    assert (b0["chunk_index"], b0["source"]) == (0, "b.md")
    assert (b1["chunk_index"], b1["source"], b1["metadata"]) == (1, "b", {"title": "B"})
    assert all(c["content_hash"] == sha(c["text"]) for c in chunks)


def test_an_oversized_chunk_is_cut_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ragd_train.snapshot import MAX_CHUNK_CHARS

    huge = "word " * (MAX_CHUNK_CHARS // 2)  # 2.5x the cap
    path = write_jsonl_lines(
        tmp_path / "chunks.jsonl", [record("big", "d", huge), record("ok", "d", "small")]
    )
    chunks = {c["chunk_id"]: c for c in read_source("jsonl", {"source": "jsonl", "path": str(path)})}
    big = chunks["big"]
    assert big["text"] == huge[:MAX_CHUNK_CHARS] and big["content_hash"] == sha(big["text"])
    assert big["metadata"]["truncated_from_chars"] == len(huge)
    assert chunks["ok"]["text"] == "small" and "truncated_from_chars" not in chunks["ok"]["metadata"]
    assert any("chunk big" in r.getMessage() and "cut to the first" in r.getMessage() for r in caplog.records)


def test_jsonl_source_round_trips_a_snapshot_byte_for_byte(docs: Path, tmp_path: Path) -> None:
    first, _ = sync_snapshot("docs", {"source": "documents", "path": str(docs)}, tmp_path / "s1")
    again, _ = sync_snapshot("docs", {"source": "jsonl", "path": str(first)}, tmp_path / "s2")
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"chunk_id": "x_chunk_1", "document_id": "x", "text": "oops"', ":3: malformed JSON"),
        ('{"chunk_id": "x_chunk_1", "document_id": "x"}', ":3: field 'text': missing required field"),
        (
            record("x_chunk_1", "x", "new text", content_hash=sha("old text")),
            ":3: field 'content_hash': stale",
        ),
        (
            record("x_chunk_0", "x", "again"),
            ":3: field 'chunk_id': duplicate chunk_id 'x_chunk_0' (first at line 1)",
        ),
        (record("x_chunk_1", "x", " \n"), ":3: field 'text': chunk 'x_chunk_1' has empty text"),
        (record("x_chunk_1", "x", "ok", chunk_index="one"), ":3: field 'chunk_index': expected an integer"),
        (record("x_chunk_1", "x", "ok", metadata=[1]), ":3: field 'metadata': expected a JSON object"),
    ],
)
def test_bad_jsonl_lines_name_file_line_and_field(tmp_path: Path, line: str, expected: str) -> None:
    path = write_jsonl_lines(tmp_path / "in.jsonl", [record("x_chunk_0", "x", "fine"), "", line])
    out = tmp_path / "snapshots"
    (out / "keep").mkdir(parents=True)

    with pytest.raises(InputError) as exc:
        sync_snapshot("c", {"source": "jsonl", "path": str(path)}, out)

    assert one_line(exc).startswith(f"{path}{expected}")
    assert [p.name for p in out.iterdir()] == ["keep"]  # no snapshot, no temp file


def test_empty_jsonl_is_an_empty_corpus(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        sync_snapshot("c", {"source": "jsonl", "path": str(path)}, tmp_path / "out")
    assert one_line(exc) == f"{path}: no chunks: the corpus is empty"
    assert_no_snapshot(tmp_path / "out")


# ------------------------------------------------------------------- beir


def test_beir_source_reads_corpus_jsonl(tmp_path: Path) -> None:
    beir = tmp_path / "scifact"
    beir.mkdir()
    write_jsonl_lines(
        beir / "corpus.jsonl",
        [
            json.dumps({"_id": "d2", "title": "", "text": "No title here."}),
            json.dumps({"_id": "d1", "title": "A Title", "text": "Body text.", "metadata": {"year": 2020}}),
            json.dumps({"_id": 7, "title": "Only title", "text": ""}),
        ],
    )

    chunks = read_source("beir", {"source": "beir", "path": str(beir)})

    assert [c["chunk_id"] for c in chunks] == ["7_chunk_0", "d1_chunk_0", "d2_chunk_0"]
    seven, d1, d2 = chunks
    assert d1["text"] == "A Title\n\nBody text."
    assert d1["metadata"] == {"title": "A Title", "year": 2020}
    assert (d1["document_id"], d1["chunk_index"], d1["source"]) == ("d1", 0, "d1")
    assert (d2["text"], d2["metadata"]) == ("No title here.", {})
    assert seven["text"] == "Only title"
    assert chunks == read_source("beir", {"source": "beir", "path": str(beir / "corpus.jsonl")})
    assert [
        c["document_id"] for c in read_source("beir", {"source": "beir", "path": str(beir), "limit": 2})
    ] == [
        "7",
        "d1",
    ]


def test_beir_duplicate_ids_name_the_line(tmp_path: Path) -> None:
    corpus = write_jsonl_lines(
        tmp_path / "corpus.jsonl",
        [
            json.dumps({"_id": "d1", "title": "", "text": "one"}),
            json.dumps({"_id": "d1", "title": "", "text": "two"}),
        ],
    )
    with pytest.raises(InputError) as exc:
        sync_snapshot("b", {"source": "beir", "path": str(corpus)}, tmp_path / "out")
    assert one_line(exc) == (
        f"{corpus}:2: field 'chunk_id': duplicate chunk_id 'd1_chunk_0' (first at line 1)"
    )
    assert_no_snapshot(tmp_path / "out")


def test_beir_lone_surrogate_names_the_line(tmp_path: Path) -> None:
    corpus = write_jsonl_lines(
        tmp_path / "corpus.jsonl",
        [json.dumps({"_id": "ok", "text": "fine"}), '{"_id": "bad", "title": "", "text": "x \\ud800 y"}'],
    )
    with pytest.raises(InputError) as exc:
        read_source("beir", {"source": "beir", "path": str(corpus)})
    assert one_line(exc).startswith(f"{corpus}:2: field 'text': cannot be encoded as UTF-8")


# ---------------------------------------------------------- sync & load


def test_sync_writes_once_and_then_only_on_change(docs: Path, tmp_path: Path) -> None:
    cfg = {"source": "documents", "path": str(docs)}
    out = tmp_path / "snapshots"

    path, changed = sync_snapshot("docs", cfg, out)
    manifest_path = out / "docs.manifest.json"
    assert (path, changed) == (out / "docs.jsonl", True)
    data = path.read_bytes()
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest == {
        "corpus": "docs",
        "source": "documents",
        "source_path": str(docs.resolve()),
        "n_chunks": 3,
        "n_documents": 3,
        "sha256": hashlib.sha256(data).hexdigest(),
        "created": manifest["created"],
        "ragd_train_version": manifest["ragd_train_version"],
    }
    assert manifest["created"].endswith("+00:00")
    lines = data.decode("utf-8").splitlines()
    assert [json.loads(line)["document_id"] for line in lines] == ["guides__deep__setup", "intro", "notes"]

    for file in (path, manifest_path):
        os.utime(file, (OLD, OLD))
    manifest_bytes = manifest_path.read_bytes()
    assert sync_snapshot("docs", cfg, out) == (path, False)
    assert path.read_bytes() == data and manifest_path.read_bytes() == manifest_bytes
    assert path.stat().st_mtime == OLD and manifest_path.stat().st_mtime == OLD
    assert sorted(p.name for p in out.iterdir()) == ["docs.jsonl", "docs.manifest.json"]

    (docs / "notes.txt").write_text("Plain notes, now edited.\n", encoding="utf-8")
    assert sync_snapshot("docs", cfg, out) == (path, True)
    assert path.read_bytes() != data and path.stat().st_mtime != OLD
    assert json.loads(manifest_path.read_text())["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == ["docs.jsonl", "docs.manifest.json"]


def test_sync_repairs_a_missing_manifest_without_touching_the_snapshot(docs: Path, tmp_path: Path) -> None:
    cfg = {"source": "documents", "path": str(docs)}
    path, _ = sync_snapshot("docs", cfg, tmp_path)
    (tmp_path / "docs.manifest.json").unlink()
    os.utime(path, (OLD, OLD))

    assert sync_snapshot("docs", cfg, tmp_path) == (path, False)

    assert path.stat().st_mtime == OLD
    manifest = json.loads((tmp_path / "docs.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_failed_sync_keeps_the_previous_snapshot(docs: Path, tmp_path: Path) -> None:
    cfg = {"source": "documents", "path": str(docs)}
    path, _ = sync_snapshot("docs", cfg, tmp_path / "out")
    before = path.read_bytes()
    (docs / "broken.txt").write_bytes(b"\xff\xfe broken")

    with pytest.raises(InputError, match="broken.txt:1: not valid UTF-8"):
        sync_snapshot("docs", cfg, tmp_path / "out")

    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["docs.jsonl", "docs.manifest.json"]


@pytest.mark.parametrize(
    ("corpus", "cfg", "expected"),
    [
        ("c", {"source": "pdfs", "path": "."}, "field 'source': unknown corpus source 'pdfs'"),
        ("c", {"source": "documents"}, "field 'path'"),
        ("c", {"source": "documents", "path": "does/not/exist"}, "field 'path': path does not exist"),
        ("../evil", {"source": "documents", "path": "."}, "field 'corpus': invalid corpus name"),
        ("c", {"source": "documents", "path": ".", "limit": 0}, "field 'limit'"),
    ],
)
def test_bad_corpus_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus: str, cfg: dict, expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as exc:
        sync_snapshot(corpus, cfg, tmp_path / "out")
    assert expected in one_line(exc)
    assert_no_snapshot(tmp_path / "out")


def test_load_snapshot_round_trip_and_strictness(docs: Path, tmp_path: Path) -> None:
    path, _ = sync_snapshot("docs", {"source": "documents", "path": str(docs)}, tmp_path)
    chunks = load_snapshot(path)
    assert chunks == read_source("documents", {"source": "documents", "path": str(docs)})

    no_hash = write_jsonl_lines(tmp_path / "no_hash.jsonl", [record("a_chunk_0", "a", "text")])
    with pytest.raises(InputError) as exc:
        load_snapshot(no_hash)
    assert one_line(exc) == f"{no_hash}:1: field 'content_hash': missing required field"

    dup = write_jsonl_lines(
        tmp_path / "dup.jsonl",
        [record("a_chunk_0", "a", "t", content_hash=sha("t"))] * 2,
    )
    with pytest.raises(InputError, match=r"dup\.jsonl:2: field 'chunk_id': duplicate chunk_id 'a_chunk_0'"):
        load_snapshot(dup)

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.jsonl: no chunks"):
        load_snapshot(empty)

    with pytest.raises(InputError, match="file not found"):
        load_snapshot(tmp_path / "missing.jsonl")


def test_validate_chunks_errors() -> None:
    good = {"chunk_id": "a_chunk_0", "document_id": "a", "text": "x"}
    validate_chunks([good], "origin")
    with pytest.raises(InputError, match="^origin: no chunks"):
        validate_chunks([], "origin")
    with pytest.raises(InputError, match="^origin: field 'chunk_id': duplicate chunk_id 'a_chunk_0'"):
        validate_chunks([good, good], "origin")
    with pytest.raises(InputError, match=r"^f2\.jsonl:4: field 'chunk_id': .*first in f1\.jsonl:9"):
        validate_chunks([good, good], "origin", [("f1.jsonl", 9), ("f2.jsonl", 4)])
    with pytest.raises(InputError, match="field 'text': chunk 'b' has empty text"):
        validate_chunks([{"chunk_id": "b", "document_id": "b", "text": ""}], "origin")


def test_content_hash_and_sources() -> None:
    assert content_hash("é") == hashlib.sha256("é".encode()).hexdigest()
    assert SOURCES == ("ragd", "documents", "jsonl", "beir")


# --------------------------------------------------------------- chunking


def check_invariants(text: str, chunks: list[tuple[int, int, str]], size: int, overlap: int) -> None:
    """Offsets match, chunks are stripped, non-empty, within budget, ordered and overlapping."""
    prev_start = prev_end = -1
    for start, end, chunk in chunks:
        assert text[start:end] == chunk
        assert chunk and chunk == chunk.strip() and len(chunk) <= size
        assert start > prev_start and end > prev_end
        if prev_end >= 0:
            assert prev_end - start <= overlap
        prev_start, prev_end = start, end
    covered = set()
    for start, end, _ in chunks:
        covered.update(range(start, end))
    assert all(i in covered or ch.isspace() for i, ch in enumerate(text))


def test_chunk_text_small_and_empty() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\n\t ") == []
    assert chunk_text("\n  Hello world.  \n") == [(3, 15, "Hello world.")]


def test_chunk_text_validates_sizes() -> None:
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_text("x", chunk_size=100, chunk_overlap=100)
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_text("x", chunk_size=100, chunk_overlap=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_text("x", chunk_size=0, chunk_overlap=0)


def test_chunk_text_prefers_paragraph_then_sentence_then_word_breaks() -> None:
    para = "First paragraph sentence one. Sentence two is here.\n\nSecond paragraph follows now."
    chunks = chunk_text(para, chunk_size=70, chunk_overlap=0)
    assert chunks[0][2] == "First paragraph sentence one. Sentence two is here."
    assert chunks[1][2] == "Second paragraph follows now."

    sentences = "One short sentence. Another sentence here. And a third one that is long."
    chunks = chunk_text(sentences, chunk_size=50, chunk_overlap=0)
    assert chunks[0][2] == "One short sentence. Another sentence here."

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda"
    chunks = chunk_text(words, chunk_size=20, chunk_overlap=0)
    assert [c[2] for c in chunks] == [
        "alpha beta gamma",
        "delta epsilon zeta",
        "eta theta iota kappa",
        "lambda",
    ]

    long_word = "x" * 25
    assert [c[2] for c in chunk_text(long_word, chunk_size=10, chunk_overlap=0)] == [
        "x" * 10,
        "x" * 10,
        "x" * 5,
    ]


def test_chunk_text_keeps_a_heading_with_its_paragraph() -> None:
    text = "Intro paragraph with enough words in it.\n\n## Next Section\n\nBody of the next section."
    chunks = chunk_text(text, chunk_size=70, chunk_overlap=0)
    assert chunks[0][2] == "Intro paragraph with enough words in it."
    assert chunks[1][2].startswith("## Next Section")


def test_chunk_text_overlap_starts_on_a_word() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    chunks = chunk_text(words, chunk_size=60, chunk_overlap=15)
    check_invariants(words, chunks, 60, 15)
    for (_, prev_end, _), (start, _, chunk) in zip(chunks, chunks[1:], strict=False):
        assert 0 < prev_end - start <= 15  # really overlapping
        assert words[start - 1] == " " and chunk.startswith("word")

    no_overlap = chunk_text(words, chunk_size=60, chunk_overlap=0)
    for (_, prev_end, _), (start, _, _) in zip(no_overlap, no_overlap[1:], strict=False):
        assert start > prev_end


def test_chunk_text_invariants_on_varied_text() -> None:
    rng = random.Random(7)
    pieces = ["alpha", "beta.", "gamma?", "delta\n\n", "x" * 40, "## Head\n\n", "été!", "\t", "\n"]
    for _ in range(400):
        text = "".join(rng.choice(pieces) + rng.choice([" ", "", "\n"]) for _ in range(rng.randint(0, 150)))
        size = rng.randint(1, 150)
        overlap = rng.randint(0, size - 1)
        check_invariants(text, chunk_text(text, size, overlap), size, overlap)
