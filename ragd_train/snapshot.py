"""Index snapshots: a corpus source turned into sorted, hashed chunk records (JSONL).

A snapshot line is ``{"chunk_id", "document_id", "text", "source", "chunk_index",
"content_hash", "metadata"}``, sorted by ``(document_id, chunk_index, chunk_id)``.
``sync_snapshot`` rewrites the snapshot and its manifest only when the serialised
content changed, so Snakemake does not rebuild downstream after a no-op re-index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragd_train import __version__
from ragd_train.chunking import chunk_text
from ragd_train.errors import InputError, resolved
from ragd_train.jsonl_io import atomic_open, dumps, read_jsonl, write_json

SOURCES = ("ragd", "documents", "jsonl", "beir")
DEFAULT_COLLECTION = "ragd_documents"
DEFAULT_GLOB = ("*.md", "*.txt")
DEFAULT_CHUNK_SIZE = 800
DEFAULT_CHUNK_OVERLAP = 100
MAX_CHUNK_CHARS = 100_000  # about 25k tokens; models read 128-512
SNAPSHOT_REQUIRED = ("chunk_id", "document_id", "text", "content_hash")
_SNAPSHOT_KEYS = (
    "chunk_id",
    "document_id",
    "text",
    "source",
    "chunk_index",
    "content_hash",
    "metadata",
)

_PAGE = 1000
_CHUNK_ID = re.compile(r"^(?P<doc>.+)_chunk_(?P<index>\d+)$")
_PROMOTED = ("document_id", "chunk_index", "source")
_MARKDOWN = {".md", ".markdown"}

# Where a chunk came from: (file, line); line is None when there is no line.
Location = tuple[str, int | None]
Located = list[tuple[dict[str, Any], Location]]


def content_hash(text: str) -> str:
    """Return the sha256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- read


def read_source(name: str, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Read a corpus source into snapshot records sorted by document and chunk."""
    located, _origin = _read(name, cfg)
    return sort_chunks([chunk for chunk, _ in located])


def _read(name: str, cfg: dict[str, Any]) -> tuple[Located, str]:
    """Read ``name`` per ``cfg``; return chunks with their locations, and the origin."""
    if name not in SOURCES:
        raise InputError(
            f"unknown corpus source {name!r} (expected one of {', '.join(SOURCES)})",
            field="source",
        )
    limit = cfg.get("limit")
    if limit is not None and (not _is_int(limit) or limit <= 0):
        raise InputError(f"must be a positive integer, got {limit!r}", field="limit")
    path = _resolve_path(cfg)
    located, origin = _READERS[name](path, cfg)
    return _apply_limit(located, limit), origin


def _resolve_path(cfg: dict[str, Any]) -> Path:
    """Resolve ``cfg["path"]`` against the current working directory."""
    raw = cfg.get("path")
    if not isinstance(raw, (str, Path)) or not str(raw).strip():
        raise InputError("corpus config needs a non-empty 'path'", field="path")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    path = resolved(path, field="path")
    if not path.exists():
        raise InputError("path does not exist", path=path, field="path")
    return path


def _read_ragd(path: Path, cfg: dict[str, Any]) -> tuple[Located, str]:
    """Read every chunk of a ragd ChromaDB collection, a page at a time, from a private copy.

    Chroma's PersistentClient writes to the directory it opens (even to read), so the index is
    checked read-only with sqlite and then copied to a temporary folder that is opened instead:
    reading a ragd index never changes it.
    """
    chroma_dir = _chroma_dir(path)
    _check_chroma_file(chroma_dir / "chroma.sqlite3")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ragd-train-chroma-") as tmp:
        copy = Path(tmp) / "chroma"
        shutil.copytree(chroma_dir, copy, ignore=shutil.ignore_patterns("bm25.db*"), symlinks=True)
        return _read_chroma_copy(copy, chroma_dir, cfg), str(chroma_dir)


def _check_chroma_file(db: Path) -> None:
    """One-line error unless ``db`` is a Chroma sqlite file (opened read-only, never migrated)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not a ragd/Chroma index ({exc})", path=db, field="path") from None
    if not {"collections", "embeddings"} <= tables:
        raise InputError("not a ragd/Chroma index (no Chroma tables)", path=db, field="path")


def _read_chroma_copy(copy: Path, chroma_dir: Path, cfg: dict[str, Any]) -> Located:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(copy), settings=Settings(anonymized_telemetry=False))
    name = cfg.get("collection") or DEFAULT_COLLECTION
    available = sorted(getattr(c, "name", c) for c in client.list_collections())
    if name not in available:
        raise InputError(
            f"collection {name!r} not found (available: {', '.join(available) or 'none'})",
            path=chroma_dir,
            field="collection",
        )
    collection = client.get_collection(name)
    located: Located = []
    offset = 0
    while True:
        page = collection.get(include=["documents", "metadatas"], limit=_PAGE, offset=offset)
        ids = page["ids"]
        docs = page.get("documents") or [None] * len(ids)
        metas = page.get("metadatas") or [None] * len(ids)
        for chunk_id, text, meta in zip(ids, docs, metas, strict=True):
            located.append((_ragd_chunk(chunk_id, text, meta or {}), (str(chroma_dir), None)))
        if len(ids) < _PAGE:
            break
        offset += len(ids)
    return located


def _chroma_dir(path: Path) -> Path:
    """The ChromaDB directory of a ragd data dir (or ``path`` itself if it is one)."""
    if (path / "chroma" / "chroma.sqlite3").is_file():
        return path / "chroma"
    if (path / "chroma.sqlite3").is_file():
        return path
    raise InputError(
        "no ragd index here (expected chroma/chroma.sqlite3 in the ragd data dir)",
        path=path,
        field="path",
    )


def _ragd_chunk(chunk_id: str, text: str | None, meta: dict[str, Any]) -> dict[str, Any]:
    """Build a snapshot record from one ChromaDB row."""
    parsed = _CHUNK_ID.match(chunk_id)
    document_id = meta.get("document_id") or (parsed["doc"] if parsed else chunk_id)
    index = meta.get("chunk_index")
    if not _is_index(index):
        index = int(parsed["index"]) if parsed else 0
    source = meta.get("source") or meta.get("filename") or str(document_id)
    extra = {k: v for k, v in meta.items() if k not in _PROMOTED}
    return make_chunk(chunk_id, str(document_id), text or "", str(source), index, extra)


def _read_documents(path: Path, cfg: dict[str, Any]) -> tuple[Located, str]:
    """Chunk every matching UTF-8 text file under the folder ``path``."""
    if not path.is_dir():
        raise InputError("expected a folder of .md/.txt files", path=path, field="path")
    size, overlap = _chunk_params(cfg)
    owners: dict[str, Path] = {}
    for file in _document_files(path, cfg.get("glob", DEFAULT_GLOB)):
        document_id = _document_id(path, file)
        if document_id in owners:
            raise InputError(
                f"document_id {document_id!r} is also derived from {owners[document_id]}", path=file
            )
        owners[document_id] = file
    # Apply the limit before reading, so files past it are never opened.
    document_ids = sorted(owners)[: cfg.get("limit") or len(owners)]
    located: Located = []
    for document_id in document_ids:
        file = owners[document_id]
        located.extend((chunk, (str(file), None)) for chunk in _document_chunks(path, file, size, overlap))
    return located, str(path)


def _document_id(root: Path, file: Path) -> str:
    """Relative path without suffix, ``/`` replaced by ``__``: stable and filesystem-safe."""
    return file.relative_to(root).with_suffix("").as_posix().replace("/", "__")


def _document_chunks(root: Path, file: Path, size: int, overlap: int) -> list[dict[str, Any]]:
    """The chunks of one document file, with filename, title and character offsets."""
    document_id = _document_id(root, file)
    text = _read_utf8(file)
    title = _title(text, file)
    return [
        make_chunk(
            f"{document_id}_chunk_{index}",
            document_id,
            chunk,
            file.relative_to(root).as_posix(),
            index,
            {"filename": file.name, "title": title, "start_char": start, "end_char": end},
        )
        for index, (start, end, chunk) in enumerate(chunk_text(text, size, overlap))
    ]


def _chunk_params(cfg: dict[str, Any]) -> tuple[int, int]:
    """Validated ``(chunk_size, chunk_overlap)`` from ``cfg``."""
    size = cfg.get("chunk_size", DEFAULT_CHUNK_SIZE)
    overlap = cfg.get("chunk_overlap", DEFAULT_CHUNK_OVERLAP)
    if not _is_int(size) or size <= 0:
        raise InputError(f"must be a positive integer, got {size!r}", field="chunk_size")
    if not _is_int(overlap) or not 0 <= overlap < size:
        raise InputError(
            f"must be an integer >= 0 and < chunk_size ({size}), got {overlap!r}",
            field="chunk_overlap",
        )
    return size, overlap


def _document_files(root: Path, patterns: str | Sequence[str]) -> list[Path]:
    """Files under ``root`` matching any pattern (recursively), hidden paths skipped."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise InputError(f"expected glob patterns, got {patterns!r}", field="glob")
    found = {
        file
        for pattern in patterns
        for file in root.rglob(pattern)
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(root).parts)
    }
    return sorted(found, key=lambda file: file.relative_to(root).as_posix())


def _read_utf8(file: Path) -> str:
    """Read ``file`` as UTF-8 (a BOM is dropped); name the bad line otherwise."""
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "convert it to UTF-8 or exclude it from the glob",
            path=file,
            line=line,
        ) from None


def _title(text: str, file: Path) -> str:
    """First ``# `` heading outside code fences for Markdown, else the file stem."""
    if file.suffix.lower() in _MARKDOWN:
        in_fence = False
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith(("```", "~~~")):
                in_fence = not in_fence
            elif not in_fence and stripped.startswith("# ") and stripped[2:].strip():
                return stripped[2:].strip().rstrip("#").strip() or file.stem
    return file.stem


def _read_jsonl_source(path: Path, cfg: dict[str, Any]) -> tuple[Located, str]:
    """Read an existing snapshot-like JSONL file, filling in derived fields."""
    return _read_records(path, ("chunk_id", "document_id", "text")), str(path)


def _read_records(path: Path, required: Sequence[str]) -> Located:
    """Read and normalise snapshot records from ``path`` with their line numbers."""
    if path.is_dir():
        raise InputError("expected a JSONL file, found a folder", path=path)
    records = read_jsonl(path, required)
    return [
        (_normalise(record, path, line), (str(path), line))
        for record, line in zip(records, _record_lines(path), strict=True)
    ]


def _record_lines(path: Path) -> list[int]:
    """Line numbers of the non-blank lines, i.e. of the records read_jsonl returns."""
    lines = path.read_bytes().split(b"\n")
    return [number for number, line in enumerate(lines, start=1) if line.strip()]


def _normalise(record: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """Check one JSONL record's types and return its canonical snapshot form."""

    def fail(message: str, field: str) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    for field in ("chunk_id", "document_id", "text"):
        if not isinstance(record[field], str):
            raise fail(f"expected a string, got {type(record[field]).__name__}", field)
    chunk_id, text = record["chunk_id"], record["text"]
    metadata = record.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise fail("expected a JSON object", "metadata")
    index = record.get("chunk_index")
    if index is None:
        parsed = _CHUNK_ID.match(chunk_id)
        index = int(parsed["index"]) if parsed else 0
    elif not _is_index(index):
        raise fail(f"expected an integer >= 0, got {index!r}", "chunk_index")
    source = record.get("source") or metadata.get("filename") or record["document_id"]
    if not isinstance(source, str):
        raise fail(f"expected a string, got {type(source).__name__}", "source")
    try:
        digest = content_hash(text)
    except UnicodeEncodeError:
        raise fail("text cannot be encoded as UTF-8 (lone surrogate)", "text") from None
    stated = record.get("content_hash")
    if stated is not None and stated != digest:
        raise fail(
            "stale content_hash: it does not match the sha256 of 'text' "
            "(re-sync the snapshot or drop the field)",
            "content_hash",
        )
    extra = {k: v for k, v in record.items() if k not in _SNAPSHOT_KEYS}
    merged = {**extra, **metadata}
    return make_chunk(chunk_id, record["document_id"], text, source, index, merged)


def _read_beir(path: Path, cfg: dict[str, Any]) -> tuple[Located, str]:
    """Read a BEIR ``corpus.jsonl``: one chunk per document."""
    corpus = path / "corpus.jsonl" if path.is_dir() else path
    if not corpus.is_file():
        raise InputError("no corpus.jsonl in this folder", path=path, field="path")
    located: Located = []
    records = read_jsonl(corpus, ("_id", "text"))
    for record, line in zip(records, _record_lines(corpus), strict=True):
        located.append((_beir_chunk(record, corpus, line), (str(corpus), line)))
    return located, str(corpus)


def _beir_chunk(record: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    """Build the single chunk of one BEIR document."""
    doc_id = record["_id"]
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise InputError("expected a string id", path=path, line=line, field="_id")
    title, body = record.get("title") or "", record["text"]
    for field, value in (("title", title), ("text", body)):
        if not isinstance(value, str):
            raise InputError("expected a string", path=path, line=line, field=field)
    metadata = record.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    if title.strip():
        metadata["title"] = title
        text = f"{title}\n\n{body}" if body.strip() else title
    else:
        text = body
    doc_id = str(doc_id)
    try:
        return make_chunk(f"{doc_id}_chunk_0", doc_id, text, doc_id, 0, metadata)
    except UnicodeEncodeError:
        raise InputError(
            "cannot be encoded as UTF-8 (lone surrogate)", path=path, line=line, field="text"
        ) from None


_READERS: dict[str, Callable[[Path, dict[str, Any]], tuple[Located, str]]] = {
    "ragd": _read_ragd,
    "documents": _read_documents,
    "jsonl": _read_jsonl_source,
    "beir": _read_beir,
}


# ------------------------------------------------------------------ records


def make_chunk(
    chunk_id: str,
    document_id: str,
    text: str,
    source: str,
    chunk_index: int,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one snapshot record (fixed key order, metadata keys sorted).

    A text longer than ``MAX_CHUNK_CHARS`` is cut there (a warning names the chunk, and
    ``metadata.truncated_from_chars`` keeps its length): every model reads at most a few hundred
    tokens of it, and tokenising 20 MB took 2.9 GB of memory."""
    if len(text) > MAX_CHUNK_CHARS:
        logging.getLogger("ragd_train").warning(
            "chunk %s of %s has %d characters: cut to the first %d",
            chunk_id,
            source,
            len(text),
            MAX_CHUNK_CHARS,
        )
        metadata = {**(metadata or {}), "truncated_from_chars": len(text)}
        text = text[:MAX_CHUNK_CHARS]
    return {
        "chunk_id": chunk_id,
        "document_id": document_id,
        "text": text,
        "source": source,
        "chunk_index": chunk_index,
        "content_hash": content_hash(text),
        "metadata": dict(sorted((metadata or {}).items())),
    }


def sort_chunks(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort records by ``(document_id, chunk_index, chunk_id)``."""
    return sorted(chunks, key=lambda c: (c["document_id"], c["chunk_index"], c["chunk_id"]))


def serialise(chunks: list[dict[str, Any]]) -> bytes:
    """Deterministic JSONL bytes of ``chunks`` (sorted, canonical key order)."""
    lines = []
    for chunk in sort_chunks(chunks):
        canonical = {key: chunk[key] for key in _SNAPSHOT_KEYS}
        canonical["metadata"] = dict(sorted(canonical["metadata"].items()))
        lines.append(dumps(canonical) + "\n")
    return "".join(lines).encode("utf-8")


def _apply_limit(located: Located, limit: int | None) -> Located:
    """Keep only the first ``limit`` documents by sorted document_id."""
    if limit is None:
        return located
    keep = set(sorted({chunk["document_id"] for chunk, _ in located})[:limit])
    return [(chunk, loc) for chunk, loc in located if chunk["document_id"] in keep]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_index(value: Any) -> bool:
    return _is_int(value) and value >= 0


# --------------------------------------------------------------- validate


def validate_chunks(
    chunks: list[dict[str, Any]],
    origin: str | Path,
    locations: Sequence[Location] | None = None,
) -> None:
    """Raise InputError for an empty corpus, a duplicate chunk_id or empty text.

    ``locations`` (parallel to ``chunks``) gives each chunk's file and line, so
    the error names them; without it the error names ``origin``.
    """
    if not chunks:
        raise InputError("no chunks: the corpus is empty", path=origin)
    seen: dict[str, Location] = {}
    for number, chunk in enumerate(chunks):
        where, line = locations[number] if locations else (str(origin), None)
        chunk_id = chunk.get("chunk_id")
        if not isinstance(chunk_id, str) or not chunk_id:
            raise InputError("missing chunk_id", path=where, line=line, field="chunk_id")
        if chunk_id in seen:
            raise InputError(
                f"duplicate chunk_id {chunk_id!r} (first {_describe(seen[chunk_id], where)})",
                path=where,
                line=line,
                field="chunk_id",
            )
        text = chunk.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"chunk {chunk_id!r} has empty text", path=where, line=line, field="text")
        seen[chunk_id] = (where, line)


def _describe(location: Location, current: str) -> str:
    """Describe where a chunk was first seen, relative to the current file."""
    path, line = location
    if path == current:
        return f"at line {line}" if line is not None else "seen earlier"
    return f"in {path}" + (f":{line}" if line is not None else "")


# ------------------------------------------------------------------- sync


def sync_snapshot(corpus: str, cfg: dict[str, Any], out_dir: str | Path = "snapshots") -> tuple[Path, bool]:
    """Write ``{out_dir}/{corpus}.jsonl`` and its manifest if the content changed.

    Returns ``(snapshot_path, changed)``. Nothing is written when the source is
    invalid, and nothing is touched when the serialised content is unchanged
    (a missing or mismatching manifest is repaired; the snapshot is not).
    """
    name = cfg.get("source") if isinstance(cfg, dict) else None
    chunks, data, digest = _snapshot_bytes(corpus, cfg)
    out = Path(out_dir)
    snapshot = out / f"{corpus}.jsonl"
    manifest_path = out / f"{corpus}.manifest.json"

    def manifest(created: datetime) -> dict[str, Any]:
        return {
            "corpus": corpus,
            "source": name,
            "source_path": str(_resolve_path(cfg)),
            "n_chunks": len(chunks),
            "n_documents": len({chunk["document_id"] for chunk in chunks}),
            "sha256": digest,
            "created": created.isoformat(timespec="seconds"),
            "ragd_train_version": __version__,
        }

    if _file_sha256(snapshot) == digest:
        if _manifest_sha256(manifest_path) != digest:
            mtime = snapshot.stat().st_mtime
            write_json(manifest_path, manifest(datetime.fromtimestamp(mtime, timezone.utc)))
        return snapshot, False
    with atomic_open(snapshot, "wb") as handle:
        handle.write(data)
    write_json(manifest_path, manifest(datetime.now(timezone.utc)))
    return snapshot, True


def _snapshot_bytes(corpus: str, cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], bytes, str]:
    """Read and validate the source: ``(chunks, snapshot bytes, their sha256)``; writes nothing."""
    _check_corpus_name(corpus)
    if not isinstance(cfg, dict):
        raise InputError(f"corpus {corpus!r}: config must be a mapping", field="corpus")
    located, origin = _read(cfg.get("source"), cfg)
    chunks = [chunk for chunk, _ in located]
    validate_chunks(chunks, origin, [loc for _, loc in located])
    data = serialise(chunks)
    return chunks, data, hashlib.sha256(data).hexdigest()


def snapshot_digest(corpus: str, cfg: dict[str, Any]) -> str:
    """The sha256 the snapshot of ``corpus`` would have now; reads the source, writes nothing.

    The workflow compares it with the snapshot on disk while it builds the DAG (also in a dry run or
    a run the lock refuses); only the ``sync_snapshot`` job, run under the lock, writes.
    """
    return _snapshot_bytes(corpus, cfg)[2]


def file_sha256(path: str | Path) -> str | None:
    """sha256 of a file's bytes, or None if it does not exist."""
    return _file_sha256(Path(path))


def _check_corpus_name(corpus: str) -> None:
    """Corpus names become file names: refuse separators and hidden names."""
    if (
        not isinstance(corpus, str)
        or not corpus.strip()
        or corpus.startswith(".")
        or any(sep in corpus for sep in ("/", "\\", "\0"))
    ):
        raise InputError(f"invalid corpus name {corpus!r}", field="corpus")


def _file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, or None if it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _manifest_sha256(path: Path) -> str | None:
    """The ``sha256`` recorded in a manifest, or None if unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("sha256") if isinstance(data, dict) else None


# ------------------------------------------------------------------- load


def load_snapshot(path: str | Path) -> list[dict[str, Any]]:
    """Strictly read a snapshot file; errors name the file, line and field."""
    path = Path(path)
    located = _read_records(path, SNAPSHOT_REQUIRED)
    chunks = [chunk for chunk, _ in located]
    validate_chunks(chunks, path, [loc for _, loc in located])
    return chunks
