"""Real questions a ragd user already asked: ragd's chat history and ``ragd evaluate`` test files.

ragd 1.0.10 keeps every chat session as ``~/.ragd/chat_history/{session_id}.json``, written by
``ragd.chat.history.save_history`` (``ChatHistory.to_dict``)::

    {"session_id", "created_at", "metadata",
     "messages": [{"role": "user"|"assistant"|"system", "content", "timestamp", "metadata",
                   "citations": [{"document_id", "filename", "page_number", "chunk_index",
                                  "relevance_score", "content_preview"}]}]}

A user message is a question; the assistant message after it holds the citations ragd showed: one
per cited document (ragd deduplicates them by document), with the ``chunk_index`` and the first 200
characters (``content_preview``) of that document's best chunk. ``ragd evaluate --test-file`` reads a
YAML (``.yaml``/``.yml``) or JSON file holding ``{"evaluations": [...]}`` (or ``"queries"``), each item
``{"query", "expected_answer"?, "expected_docs"?}``, ``expected_docs`` being ragd document ids.

Reading never writes: not even the folder ragd's ``get_history_path`` would create.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from ragd_train.errors import InputError

log = logging.getLogger("ragd_train")

CHAT_HISTORY = "chat_history"
TEST_FILE = "ragd_test_file"
MIN_WORDS = 3
# The filename ragd gives a cited result that has none (a keyword-only hit: its chunk_index is a
# placeholder 0 too, see ragd.search.hybrid._hybrid_search and ragd.chat.context.RetrievedContext).
UNKNOWN_FILENAME = "Unknown"
# A preview shorter than this is not searched for across chunks (it would match too many).
MIN_PREVIEW_CHARS = 20
_PREFIX_CHARS = 48
_ROLES = ("user", "assistant", "system")  # ragd.chat.message.ChatRole
# What a damaged session file raises in ragd's load_history (and in the plain reader, alike).
_DAMAGE = (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError)


@dataclass(frozen=True)
class Cited:
    """One citation ragd showed (or one expected document of a test file): what can be matched."""

    document_id: str = ""  # ragd's id: sha256 of the file's resolved path, 16 hex digits
    filename: str = ""  # the file's name (no folder); "Unknown" when ragd had none
    chunk_index: int | None = None  # the cited document's best chunk (ragd chunk id doc_chunk_{i})
    page_number: int | None = None
    preview: str | None = None  # the first 200 characters of that chunk's text
    score: float | None = None  # ragd's relevance score of that chunk


@dataclass(frozen=True)
class RealQuestion:
    """A question the user asked, where it was found, and the documents ragd cited for it."""

    query: str
    source: str  # CHAT_HISTORY or TEST_FILE
    file: str
    position: int  # message index in the session, or item index in the test file (from 0)
    cited: tuple[Cited, ...]
    question_id: str  # hash of the normalised query: the same question anywhere has one id
    expected_answer: str | None = None


class QuestionList(list[RealQuestion]):
    """The questions read, with ``skipped`` (reason -> count) and the ``warnings`` given."""

    def __init__(self, questions: Iterable[RealQuestion] = ()) -> None:
        super().__init__(questions)
        self.skipped: Counter[str] = Counter()
        self.warnings: list[str] = []

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"{len(self)} questions" + (f" (skipped: {skipped})" if skipped else "")


@dataclass(frozen=True)
class CitationMatch:
    """Where one question's citations are in a snapshot (ids of the snapshot's chunk records)."""

    question_id: str
    document_ids: frozenset[str]  # every document a citation was matched to
    chunk_ids: frozenset[str]  # the chunks that were identified exactly
    unmatched: tuple[Cited, ...]  # citations that match no document of the snapshot
    via: frozenset[str]  # how: "document_id", "filename", "content"

    @property
    def in_index(self) -> bool:
        """Whether the question refers to at least one document that is in the snapshot."""
        return bool(self.document_ids)


# ------------------------------------------------------------------ questions


def normalise_query(text: str) -> str:
    """The text questions are compared by: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def question_id(text: str) -> str:
    """A stable id of a question: 16 hex digits of the sha256 of its normalised text."""
    return hashlib.sha256(normalise_query(text).encode("utf-8")).hexdigest()[:16]


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")  # an ideograph or kana counts as one word
_POLITE = re.compile(
    r"^(?:(?:ok|okay|thanks|thank you|thank u|thx|ty|cheers|many thanks|very much|so much|a lot|"
    r"please|got it|i see|alright)(?: |$))+"
)
_FOLLOW_UPS = frozenset(
    {
        "yes",
        "no",
        "great",
        "perfect",
        "nice",
        "cool",
        "good",
        "wow",
        "awesome",
        "excellent",
        "great thanks",
        "perfect thanks",
        "good to know",
        "sure",
        "more",
        "continue",
        "go on",
        "go ahead",
        "next",
        "again",
        "try again",
        "why",
        "how",
        "really",
        "hi",
        "hello",
        "hey",
        "bye",
        "goodbye",
        "what",
        "explain",
        "elaborate",
        "please elaborate",
        "can you elaborate",
        "could you elaborate",
        "tell me more",
        "say more",
        "what do you mean",
        "can you explain",
        "could you explain",
        "explain more",
        "explain that",
        "explain that again",
        "say that again",
        "makes sense",
        "that makes sense",
        "thats helpful",
        "thats great",
        "that helps",
        "that was helpful",
        "that is helpful",
        "for that",
    }
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold().replace("'", "").replace("\u2019", ""))


def skip_reason(text: str, min_words: int = MIN_WORDS) -> str | None:
    """Why a chat message is no question to train on ("empty", "command", "follow-up", "too
    short"), or None. A polite lead-in ("thanks, ...") is looked past: "thanks, and what does the
    backup policy say?" is a question."""
    if not text.strip():
        return "empty"
    if text.lstrip().startswith("/"):
        return "command"  # ragd chat's /search, /help, ... (a mistyped one reaches the history)
    words = _words(text)
    joined = " ".join(words)
    rest = _POLITE.sub("", joined).strip()
    if not rest or rest in _FOLLOW_UPS or joined in _FOLLOW_UPS:
        return "follow-up"
    if len(words) < min_words:
        return "too short"
    if rest != joined and len(rest.split()) < min_words:
        return "follow-up"  # "thanks for that"
    return None


def _keep(out: QuestionList, seen: set[str], question: RealQuestion) -> None:
    """Append ``question`` unless one with the same id was kept before (counted as duplicate)."""
    if question.question_id in seen:
        out.skipped["duplicate"] += 1
        return
    seen.add(question.question_id)
    out.append(question)


# ------------------------------------------------------------------ chat history


def default_chat_history_dir() -> Path:
    """Where ragd 1.0.10 saves chat sessions (``get_history_path``'s folder, never created here)."""
    return Path.home() / ".ragd" / "chat_history"


def _ragd_load_history() -> Any | None:
    try:
        from ragd.chat.history import load_history
    except ImportError:
        return None
    return load_history


# A session message as both readers give it: (role, content, citations).
_Message = tuple[str, Any, tuple[Cited, ...]]


def read_chat_history(
    directory: str | Path | None = None,
    *,
    min_words: int = MIN_WORDS,
    use_ragd: bool | None = None,
) -> QuestionList:
    """Every user question of every ``*.json`` session in ``directory`` (default: ragd's
    ``~/.ragd/chat_history``), sessions in file-name order, each with the citations of the
    assistant reply after it. Read with ragd's own ``load_history`` when ragd is installed (or
    ``use_ragd``), else with a plain JSON reader of the same format. Empty, trivial and repeated
    questions are skipped and counted; a damaged session file is skipped with a one-line warning.
    A missing folder gives no questions. Nothing is ever written."""
    directory = Path(directory) if directory is not None else default_chat_history_dir()
    loader = _ragd_load_history() if use_ragd is not False else None
    if use_ragd and loader is None:
        raise InputError("ragd is not installed: cannot read the chat history with ragd's loader")
    out = QuestionList()
    if not directory.exists():
        log.info("no ragd chat history in %s", directory)
        return out
    if not directory.is_dir():
        raise InputError("expected ragd's chat history folder, found a file", path=directory)
    seen: set[str] = set()
    for path in sorted((p for p in directory.glob("*.json") if p.is_file()), key=lambda p: p.name):
        try:
            messages = _session_with_ragd(path, loader) if loader else _session_plain(path)
            _check_contents(messages)
        except _DAMAGE as exc:
            warning = f"{path}: skipped: not a readable ragd chat session ({_describe(exc)})"
            log.warning("%s", warning)
            out.warnings.append(warning)
            out.skipped["damaged file"] += 1
            continue
        for position, (role, content, _) in enumerate(messages):
            if role != "user":
                continue
            reason = skip_reason(content, min_words)
            if reason:
                out.skipped[reason] += 1
                continue
            query = content.strip()
            question = RealQuestion(
                query=query,
                source=CHAT_HISTORY,
                file=str(path),
                position=position,
                cited=_reply_citations(messages, position),
                question_id=question_id(query),
            )
            _keep(out, seen, question)
    log.info("ragd chat history %s: %s", directory, out.summary())
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} at line {exc.lineno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text at byte {exc.start}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _reply_citations(messages: Sequence[_Message], position: int) -> tuple[Cited, ...]:
    """The citations of the assistant message answering message ``position`` (system messages are
    looked past; another user message first means there was no answer, e.g. Ollama failed)."""
    for role, _, citations in messages[position + 1 :]:
        if role == "system":
            continue
        return citations if role == "assistant" else ()
    return ()


def _check_contents(messages: Sequence[_Message]) -> None:
    for number, (_, content, _) in enumerate(messages):
        if not isinstance(content, str):
            raise TypeError(f"message {number}: content is {type(content).__name__}, not text")


def _session_with_ragd(path: Path, load_history: Any) -> list[_Message]:
    history = load_history(path)
    return [
        (
            message.role.value,
            message.content,
            tuple(
                _cited(
                    c.document_id,
                    c.filename,
                    c.page_number,
                    c.chunk_index,
                    c.relevance_score,
                    c.content_preview,
                )
                for c in message.citations
            ),
        )
        for message in history.messages
    ]


def _session_plain(path: Path) -> list[_Message]:
    """The same as ``_session_with_ragd`` without ragd: each step of ragd 1.0.10's
    ``ChatHistory.from_dict``/``ChatMessage.from_dict``, failing on what they fail on."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    created_at = data.get("created_at")
    if isinstance(created_at, str):
        datetime.fromisoformat(created_at)
    messages: list[_Message] = []
    for message in data.get("messages", []):
        citations = tuple(
            _cited(
                c.get("document_id", ""),
                c.get("filename", ""),
                c.get("page_number"),
                c.get("chunk_index"),
                c.get("relevance_score"),
                c.get("content_preview"),
            )
            for c in message.get("citations", [])
        )
        timestamp = message.get("timestamp")
        if isinstance(timestamp, str):
            datetime.fromisoformat(timestamp)
        role = message["role"]
        if role not in _ROLES:
            raise ValueError(f"{role!r} is not a valid ChatRole")
        messages.append((role, message["content"], citations))
    return messages


def _cited(document_id: Any, filename: Any, page: Any, chunk_index: Any, score: Any, preview: Any) -> Cited:
    """A citation with its fields typed (a value of the wrong type is dropped, not fatal)."""

    def count(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    return Cited(
        document_id=document_id if isinstance(document_id, str) else "",
        filename=filename if isinstance(filename, str) else "",
        chunk_index=count(chunk_index),
        page_number=count(page),
        preview=preview if isinstance(preview, str) and preview.strip() else None,
        score=float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
    )


# ------------------------------------------------------------------ ragd test files


def read_ragd_test_file(path: str | Path) -> QuestionList:
    """The queries of a ``ragd evaluate --test-file`` file, read as ragd 1.0.10 reads it (its CLI
    loads it inline: ``yaml.safe_load`` for ``.yaml``/``.yml``, else ``json.load``; the list under
    ``evaluations``, else ``queries``; items ``{query, expected_answer, expected_docs}``), with
    ``expected_docs`` as citations. Repeated queries are skipped and counted. A bad file is one
    :class:`InputError` naming the file, and the line and field where known."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("expected a YAML or JSON test file, found a folder", path=path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror})", path=path) from None
    data = _parse_test_file(path, text)

    def fail(message: str, *where: str | int, field: str | None = None) -> InputError:
        dotted = "".join(f"[{w}]" if isinstance(w, int) else f".{w}" for w in where).lstrip(".")
        return InputError(message, path=path, line=_line_of(text, where), field=field or dotted or None)

    if not isinstance(data, dict):
        raise fail("expected a mapping holding 'evaluations' (or 'queries'), as ragd evaluate reads")
    key = "evaluations" if "evaluations" in data else "queries"
    queries = data.get(key)
    if not queries:
        raise fail("no queries found (ragd evaluate reads the list under 'evaluations' or 'queries')", key)
    if not isinstance(queries, list):
        raise fail(f"expected a list of queries, got {_kind(queries)}", key)
    out = QuestionList()
    seen: set[str] = set()
    for index, item in enumerate(queries):
        if not isinstance(item, dict):
            raise fail(f"expected a mapping with a 'query', got {_kind(item)}", key, index)
        if item.get("query") is None:
            raise fail("missing required field", key, index, "query")
        query = item["query"]
        if not isinstance(query, str):
            raise fail(f"expected a string, got {_kind(query)}", key, index, "query")
        if not query.strip():
            raise fail("empty query", key, index, "query")
        answer_key = "expected_answer" if "expected_answer" in item else "expected"
        answer = item.get(answer_key)
        if answer is not None and not isinstance(answer, str):
            raise fail(f"expected a string, got {_kind(answer)}", key, index, answer_key)
        docs = item.get("expected_docs")
        if docs is None:
            docs = []
        if not isinstance(docs, list):
            raise fail(f"expected a list of document ids, got {_kind(docs)}", key, index, "expected_docs")
        cited = []
        for number, doc in enumerate(docs):
            if isinstance(doc, bool) or not isinstance(doc, (str, int)) or not str(doc).strip():
                raise fail(f"expected a document id, got {doc!r}", key, index, "expected_docs", number)
            cited.append(Cited(document_id=str(doc).strip()))
        query = query.strip()
        question = RealQuestion(
            query=query,
            source=TEST_FILE,
            file=str(path),
            position=index,
            cited=tuple(dict.fromkeys(cited)),
            question_id=question_id(query),
            expected_answer=answer,
        )
        _keep(out, seen, question)
    log.info("ragd test file %s: %s", path, out.summary())
    return out


def _parse_test_file(path: Path, text: str) -> Any:
    if path.suffix in (".yaml", ".yml"):  # ragd's own test, case-sensitive
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputError(
                f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else None
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _line_of(text: str, where: Sequence[str | int]) -> int | None:
    """The line of the deepest node on the path ``where`` (JSON is read as YAML for this)."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for step in where:
        found = None
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            found = node.value[step]
        if found is None:
            break
        node, line = found, found.start_mark.line + 1
    return line


# ------------------------------------------------------------------ citations and a snapshot


def _flat(text: str) -> str:
    """Text compared for previews: whitespace runs made one space, leading whitespace dropped."""
    return re.sub(r"\s+", " ", text).lstrip()


class _Snapshot:
    """A snapshot's chunks indexed by document, position, file name and text start."""

    def __init__(self, chunks: Iterable[Mapping[str, Any]]) -> None:
        self.by_doc: dict[str, list[Mapping[str, Any]]] = {}
        self.by_pos: dict[tuple[str, int], Mapping[str, Any]] = {}
        self.by_name: dict[str, set[str]] = {}
        self.by_id: dict[str, Mapping[str, Any]] = {}
        self._flat: dict[str, str] = {}
        self._starts: dict[str, set[str]] | None = None
        for chunk in chunks:
            doc = chunk["document_id"]
            self.by_doc.setdefault(doc, []).append(chunk)
            self.by_id[chunk["chunk_id"]] = chunk
            index = chunk.get("chunk_index")
            if isinstance(index, int):
                self.by_pos.setdefault((doc, index), chunk)
            meta = chunk.get("metadata") or {}
            for name in (meta.get("filename"), meta.get("source"), chunk.get("source")):
                if isinstance(name, str) and name.strip():
                    for key in {name, PurePath(name).name}:
                        self.by_name.setdefault(key, set()).add(doc)

    def flat(self, chunk: Mapping[str, Any]) -> str:
        chunk_id = chunk["chunk_id"]
        if chunk_id not in self._flat:
            self._flat[chunk_id] = _flat(chunk["text"])
        return self._flat[chunk_id]

    def starting_with(self, preview: str) -> set[str]:
        """Documents with a chunk whose text starts with ``preview`` (flattened)."""
        if len(preview) < _PREFIX_CHARS:
            return set()
        if self._starts is None:
            self._starts = {}
            for chunks in self.by_doc.values():
                for chunk in chunks:
                    key = self.flat(chunk)[:_PREFIX_CHARS]
                    self._starts.setdefault(key, set()).add(chunk["chunk_id"])
        ids = self._starts.get(preview[:_PREFIX_CHARS], set())
        return {self.by_id[i]["document_id"] for i in ids if self.flat(self.by_id[i]).startswith(preview)}

    def holding(self, docs: Iterable[str], preview: str) -> set[str]:
        return {d for d in docs if any(preview in self.flat(c) for c in self.by_doc[d])}

    def match(self, cited: Cited) -> tuple[set[str], set[str], set[str]]:
        """``(document ids, exact chunk ids, how)`` of one citation."""
        preview = _flat(cited.preview).rstrip() if cited.preview else ""
        searchable = len(preview) >= MIN_PREVIEW_CHARS
        docs: set[str] = set()
        via: set[str] = set()
        if cited.document_id in self.by_doc:
            docs, via = {cited.document_id}, {"document_id"}
        else:
            for name in (cited.filename, cited.document_id):
                if name and name != UNKNOWN_FILENAME:  # a path as given, else its file name
                    docs |= self.by_name.get(name) or self.by_name.get(PurePath(name).name, set())
            if docs:
                via = {"filename"}
                if len(docs) > 1 and searchable:  # two files of one name: the preview tells which
                    docs = self.holding(docs, preview) or docs
            elif searchable:
                docs = self.starting_with(preview)
                via = {"content"} if docs else set()
        chunks: set[str] = set()
        for doc in docs:
            at = self.by_pos.get((doc, cited.chunk_index)) if cited.chunk_index is not None else None
            if at is not None and (
                self.flat(at).startswith(preview)
                if preview
                else via == {"document_id"} and cited.filename not in ("", UNKNOWN_FILENAME)
            ):
                chunks.add(at["chunk_id"])
            elif searchable:  # ragd's chunk_index placeholder, or another chunking (a documents source)
                own = self.by_doc[doc]
                chunks |= {c["chunk_id"] for c in own if self.flat(c).startswith(preview)} or {
                    c["chunk_id"] for c in own if preview in self.flat(c)
                }
        return docs, chunks, via


def match_citations(
    questions: Iterable[RealQuestion], chunks: Iterable[Mapping[str, Any]]
) -> list[CitationMatch]:
    """For each question (in order), the snapshot documents and chunks its citations refer to.

    A citation's ragd ``document_id`` is looked up first (a ``ragd`` source keeps ragd's ids);
    failing that its file name (``metadata.filename`` or the name of ``source``: a ``documents``
    source has other ids; a test file's ``expected_docs`` may name files); failing that, the start
    of its text preview. A chunk is exact when the chunk at ``chunk_index`` of a matched document
    starts with the preview (a ``ragd`` source), else the chunks holding the whole preview are.
    """
    snapshot = _Snapshot(chunks)
    matches = []
    for question in questions:
        docs: set[str] = set()
        exact: set[str] = set()
        via: set[str] = set()
        unmatched = []
        for cited in question.cited:
            found, found_chunks, how = snapshot.match(cited)
            if not found:
                unmatched.append(cited)
            docs |= found
            exact |= found_chunks
            via |= how
        matches.append(
            CitationMatch(
                question_id=question.question_id,
                document_ids=frozenset(docs),
                chunk_ids=frozenset(exact),
                unmatched=tuple(unmatched),
                via=frozenset(via),
            )
        )
    return matches


# ------------------------------------------------------------------ split


def split_questions(
    questions: Iterable[RealQuestion | Mapping[str, Any]], eval_share: float, seed: int
) -> tuple[list[Any], list[Any]]:
    """``(train, eval)`` in the given order: a question is eval when the hash of
    ``(seed, question_id)`` falls below ``eval_share``, so adding or removing questions never
    moves the others (with few questions a side may be empty)."""
    if isinstance(eval_share, bool) or not isinstance(eval_share, (int, float)) or not 0 <= eval_share <= 1:
        raise InputError(f"must be a number from 0 to 1, got {eval_share!r}", field="eval_share")
    train: list[Any] = []
    held: list[Any] = []
    for question in questions:
        qid = question["question_id"] if isinstance(question, Mapping) else question.question_id
        draw = int(hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()[:12], 16) / 16**12
        (held if draw < eval_share else train).append(question)
    return train, held
