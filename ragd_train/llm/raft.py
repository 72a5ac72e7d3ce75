"""RAFT training data: each query with its oracle chunk among hard distractors, in ragd's prompt.

One example per training query (Zhang et al., 2024, "RAFT: Adapting Language Model to Domain
Specific RAG"):

* the context holds ``k`` distractors taken from the query's mined hard negatives (topped up with
  random chunks of other documents when too few were mined) plus the oracle chunk; in a fraction
  ``1 - p`` of the examples the oracle is replaced by one more distractor;
* the context is laid out exactly as ragd lays it out for its chat model
  (``ragd.chat.context.ContextWindow.format_context``, rebuilt in :mod:`ragd_train.ragd.prompts`):
  the ``=== KNOWLEDGE BASE SOURCES ===`` header with its citation guidance, one ``[n] filename``
  block per document (chunks of the same document share one number, joined by ``[...]``), blocks
  separated by ``---``; the system prompt and the user message are ragd's ``answer`` template, so
  the adapter learns the prompt it will see;
* the answer is a chain of thought that quotes the sources verbatim between ``##begin_quote##`` and
  ``##end_quote##``, cites them as ``[1]`` or ``[1;2]`` and ends with an ``<ANSWER>:`` line. It is
  written by the LLM (Ollama, through the content-addressed cache) or, offline, extracted: the
  oracle sentence that best matches the query, quoted. Without the oracle the answer says that the
  sources do not contain it. Every quote is checked against the context; an example whose quote is
  not verbatim is dropped and counted.

Records are chat-format (``messages``), the one shape the MLX, Unsloth and PEFT backends all read.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from ragd_train.cache import CachedLLM, GenerationCache, cache_key
from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import read_jsonl, write_json, write_jsonl
from ragd_train.progress import track
from ragd_train.ragd.prompts import (
    CITATION,
    NO_INFORMATION,
    Source,
    chunk_filename,
    chunk_pages,
    format_citation,
    format_context,
    prompt_source,
    system_prompt,
    user_message,
)
from ragd_train.settings import SEED_DEFAULT, RaftSettings, bind
from ragd_train.text import content_terms, split_sentences

log = logging.getLogger("ragd_train")

# -- RAFT answer format ------------------------------------------------------------------------

BEGIN_QUOTE = "##begin_quote##"
END_QUOTE = "##end_quote##"
ANSWER_PREFIX = "<ANSWER>:"
QUOTE = re.compile(re.escape(BEGIN_QUOTE) + r"(.*?)" + re.escape(END_QUOTE), re.DOTALL)
# What the adapter is trained to write, and ragd's chat shows as is: the same answer with the
# quotes in typographic quotation marks and the final line without its ``<ANSWER>:`` marker.
DISPLAY_OPEN, DISPLAY_CLOSE = "\u201c", "\u201d"


def to_display(answer: str) -> str:
    """A verified RAFT answer in the form ragd's chat displays: no ``##...##``/``<ANSWER>:`` markers."""
    text = answer.replace(BEGIN_QUOTE, DISPLAY_OPEN).replace(END_QUOTE, DISPLAY_CLOSE)
    head, sep, tail = text.rpartition(ANSWER_PREFIX)
    return f"{head}{tail.strip()}" if sep else text


def from_display(text: str) -> str:
    """The marker form of a displayed answer (its last non-empty line is the answer line), for checks."""
    if ANSWER_PREFIX in text or BEGIN_QUOTE in text:
        return text  # already in marker form
    marked = text.replace(DISPLAY_OPEN, BEGIN_QUOTE).replace(DISPLAY_CLOSE, END_QUOTE)
    lines = marked.rstrip().splitlines()
    if not lines:
        return marked
    lines[-1] = f"{ANSWER_PREFIX} {lines[-1].strip()}"
    return "\n".join(lines)


RAFT_PROMPT_VERSION = "raft-cot-v1"
RAFT_PROMPT = """You write one worked answer for training a retrieval-augmented assistant.

{context}

Question: {question}

The answer is in source [{oracle}]. Answer the question from the sources above:
1. Reason step by step. Every time you use the sources, copy the exact words between \
{begin} and {end} (character for character, no changes, no "..."), followed by the source's \
citation, such as [{oracle}].
2. End with one final line that starts with "{answer}" and gives a short, self-contained answer \
with its citation.
Write nothing after that line."""


class RaftConfig(RaftSettings):
    """The ``raft`` settings and the seed: everything that decides the RAFT examples."""

    SECTION: ClassVar[str] = "raft"
    seed: int = SEED_DEFAULT


# -- answers ---------------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split())


def verify_answer(answer: str, context: str, n_sources: int, *, needs_quote: bool = True) -> str | None:
    """Why ``answer`` fails the RAFT format, or None when it passes.

    Every ``##begin_quote##...##end_quote##`` span must occur verbatim in ``context`` (runs of
    whitespace compare equal, so re-wrapped lines pass), every ``[n]`` citation must name a
    source, and the answer must end with a non-empty ``<ANSWER>:`` line.
    """
    if answer.count(BEGIN_QUOTE) != answer.count(END_QUOTE):
        return "unbalanced_quote"
    quotes = QUOTE.findall(answer)
    if needs_quote and not quotes:
        return "no_quote"
    flat = _squash(context)
    for quote in quotes:
        if not quote.strip() or _squash(quote) not in flat:
            return "quote_not_verbatim"
    for group in CITATION.findall(QUOTE.sub(" ", answer)):  # a quoted "[3]" is the source's own
        if any(not 1 <= int(n) <= n_sources for n in group.split(";")):
            return "bad_citation"
    lines = [line for line in answer.strip().splitlines() if line.strip()]
    if not lines or not lines[-1].lstrip().startswith(ANSWER_PREFIX):
        return "no_answer_line"
    if not lines[-1].split(ANSWER_PREFIX, 1)[1].strip():
        return "empty_answer"
    return None


def best_sentence(query: str, text: str) -> str:
    """The sentence of ``text`` that best matches ``query``.

    Prose first (a line that reads like a sentence: five words or more, ending in punctuation;
    code, headings and table rows rarely do, and a chunk may start inside a code block), then
    the most content terms shared with the query; the earliest wins a tie.
    """
    wanted = set(content_terms(query))
    best, best_key = "", (False, -1)
    for line in text.splitlines():
        if line.strip().startswith(("```", "#", "|")):
            continue
        for sentence in split_sentences(line):
            terms = content_terms(sentence)
            if len(terms) < 2:
                continue
            prose = sentence.endswith((".", "!", "?", ":")) and len(sentence.split()) >= 5
            key = (prose, len(wanted & set(terms)))
            if key > best_key:
                best, best_key = sentence, key
    return best or _squash(text)[:300]


def extractive_answer(query: str, oracle: Source, number: int) -> str:
    """Quote the oracle sentence that best matches the query; it is the answer."""
    sentence = best_sentence(query, oracle.text)
    cite = format_citation([number])
    return (
        f"The question is covered by source {cite} ({oracle.filename}). It states: "
        f"{BEGIN_QUOTE}{sentence}{END_QUOTE} {cite}. This passage answers the question directly.\n"
        f"{ANSWER_PREFIX} {sentence} {cite}"
    )


def no_oracle_answer(sources: list[Source], numbers: dict[str, int]) -> str:
    """What the model should say when no source holds the answer."""
    seen: dict[int, str] = {}
    for s in sources:
        seen.setdefault(numbers[s.chunk_id], s.filename)
    listed = ", ".join(f"[{n}] {name}" for n, name in sorted(seen.items()))
    return (
        f"I checked every source: {listed}. None of them contains the information the question asks "
        "for; they cover other topics, so any answer would not be grounded in the indexed documents.\n"
        f"{ANSWER_PREFIX} {NO_INFORMATION}"
    )


class LLMAnswerWriter(CachedLLM):
    """Chain-of-thought answers from an LLM, cached by content; failing answers are retried once."""

    def write(
        self, context: str, question: str, oracle: int, n_sources: int
    ) -> tuple[str | None, str | None]:
        """Return ``(answer, None)`` or ``(None, reason)`` when no answer passes the checks."""
        key = cache_key(
            kind="raft_answer",
            prompt=RAFT_PROMPT_VERSION,
            context=context,
            question=question,
            oracle=oracle,
            model=self.digest,
            **self.params,
        )
        reason: str | None = None

        def ask() -> str | None:
            nonlocal reason
            for attempt in range(2):  # the retry changes the seed, else the model repeats itself
                options = {**self.params, "seed": self.params["seed"] + attempt}
                answer = self.llm.chat([{"role": "user", "content": prompt}], options=options).strip()
                reason = verify_answer(answer, context, n_sources)
                if reason is None:
                    return answer
            return None

        prompt = RAFT_PROMPT.format(
            context=context,
            question=question,
            oracle=oracle,
            begin=BEGIN_QUOTE,
            end=END_QUOTE,
            answer=ANSWER_PREFIX,
        )
        answer = self.cache.fetch(
            key,
            ask,
            valid=lambda cached: (
                isinstance(cached, str) and verify_answer(cached, context, n_sources) is None
            ),
        )
        return (answer, None) if answer is not None else (None, reason)


def make_answer_writer(
    cfg: RaftConfig, config: dict[str, Any], cache_dir: str | Path
) -> LLMAnswerWriter | None:
    """The LLM writer the config asks for, or None for extractive answers (``auto`` without Ollama)."""
    if cfg.answers == "extractive":
        return None
    from ragd_train.chat.connect import connect

    required_by = "raft.answers" if cfg.answers == "ollama" else ""
    llm, problem = connect(config, required_by=required_by, instead="extractive")
    if llm is None:
        log.warning("%s: RAFT answers are extractive (quoted oracle sentences)", problem)
        return None
    return LLMAnswerWriter(
        llm,
        GenerationCache(cache_dir, "generations"),
        temperature=config["ollama"]["temperature"],
        seed=cfg.seed,
    )


# -- assembly ------------------------------------------------------------------------------------


def _stable_rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\n{key}".encode()).hexdigest()


def oracle_kept(query_ids: list[str], fraction: float, seed: int) -> set[str]:
    """Exactly ``round(fraction * n)`` queries keep their oracle, chosen by a seeded hash order."""
    keep = round(fraction * len(query_ids))
    ranked = sorted(set(query_ids), key=lambda q: _stable_rank(seed, q))
    return set(ranked[:keep])


def chunk_source(chunk: dict[str, Any], role: str, origin: str) -> Source:
    return Source(
        chunk_id=chunk["chunk_id"],
        document_id=str(chunk["document_id"]),
        filename=chunk_filename(chunk),
        text=chunk["text"],
        role=role,
        origin=origin,
        pages=chunk_pages(chunk),
    )


def pick_distractors(
    record: dict[str, Any],
    n: int,
    chunks: dict[str, dict[str, Any]],
    pool: list[str],
    rng: random.Random,
) -> list[Source]:
    """``n`` distractors: the record's mined hard negatives in rank order, then random chunks of
    other documents when fewer were mined."""
    oracle_id = record["positive_id"]
    oracle_doc = str(record.get("source_document") or chunks[oracle_id]["document_id"])
    chosen: list[Source] = []
    used = {oracle_id}
    for neg in record.get("negatives") or []:
        neg_id = neg.get("id") if isinstance(neg, dict) else None
        if len(chosen) == n:
            break
        if neg_id in used:
            continue
        chunk = chunks.get(neg_id) if neg_id else None
        if chunk is None:  # a negative that is not in the snapshot: keep its text, name it by id
            if not isinstance(neg, dict) or not neg.get("text"):
                continue
            chunk = {
                "chunk_id": neg_id or f"negative-{len(chosen)}",
                "document_id": neg_id,
                "text": neg["text"],
            }
        chosen.append(chunk_source(chunk, "distractor", "mined"))
        used.add(chunk["chunk_id"])
    candidates = [c for c in pool if c not in used and str(chunks[c]["document_id"]) != oracle_doc]
    rng.shuffle(candidates)
    for chunk_id in candidates[: n - len(chosen)]:
        chosen.append(chunk_source(chunks[chunk_id], "distractor", "random"))
    return chosen


def build_example(
    record: dict[str, Any],
    chunks: dict[str, dict[str, Any]],
    pool: list[str],
    cfg: RaftConfig,
    keep_oracle: bool,
    writer: LLMAnswerWriter | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """One RAFT example, or ``(None, reason)`` when its answer fails verification."""
    rng = random.Random(_stable_rank(cfg.seed, record["query_id"]))
    oracle_chunk = chunks.get(record["positive_id"]) or {
        "chunk_id": record["positive_id"],
        "document_id": record.get("source_document", record["positive_id"]),
        "text": record["positive"],
    }
    oracle = chunk_source(oracle_chunk, "oracle", "oracle")
    distractors = pick_distractors(record, cfg.distractors + (0 if keep_oracle else 1), chunks, pool, rng)
    sources = [*([oracle] if keep_oracle else []), *distractors]
    rng.shuffle(sources)
    context, numbers = format_context(sources)
    n_sources = len(set(numbers.values()))
    question = record["query"]
    if not keep_oracle:
        answer, answered_by = no_oracle_answer(sources, numbers), "no_oracle"
        reason = verify_answer(answer, context, n_sources, needs_quote=False)
    elif writer is not None:
        answer, reason = writer.write(context, question, numbers[oracle.chunk_id], n_sources)
        answered_by = writer.name
    else:
        answer, answered_by = extractive_answer(question, oracle, numbers[oracle.chunk_id]), "extractive"
        reason = verify_answer(answer, context, n_sources)
    if reason is not None or answer is None:
        return None, reason or "no_answer"
    example = {
        "messages": [
            {"role": "system", "content": system_prompt()},
            {"role": "user", "content": user_message(context, question)},
            {"role": "assistant", "content": to_display(answer)},
        ],
        "query_id": record["query_id"],
        "query": question,
        "source_document": str(record.get("source_document", oracle.document_id)),
        "oracle_id": oracle.chunk_id,
        "oracle_present": keep_oracle,
        "oracle_citation": numbers[oracle.chunk_id] if keep_oracle else None,
        "sources": [
            {
                "id": s.chunk_id,
                "document_id": s.document_id,
                "filename": s.filename,
                "role": s.role,
                "origin": s.origin,
                "citation": numbers[s.chunk_id],
            }
            for s in sources
        ],
        "answer_source": answered_by,
    }
    return example, None


def assemble(
    records: list[dict[str, Any]],
    chunks: dict[str, dict[str, Any]],
    cfg: RaftConfig,
    writer: LLMAnswerWriter | None,
    split: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """RAFT examples for ``records`` and their counts."""
    pool = sorted(chunks)
    kept = oracle_kept([r["query_id"] for r in records], cfg.oracle_fraction, cfg.seed)
    examples: list[dict[str, Any]] = []
    failed: Counter[str] = Counter()
    for record in track(records, f"RAFT {split} examples"):
        example, reason = build_example(record, chunks, pool, cfg, record["query_id"] in kept, writer)
        if example is None:
            failed[reason or "no_answer"] += 1
            log.debug("dropped %s: %s", record["query_id"], reason)
            continue
        example["split"] = split
        examples.append(example)
    origins = Counter(s["origin"] for e in examples for s in e["sources"] if s["role"] == "distractor")
    stats = {
        "queries": len(records),
        "examples": len(examples),
        "oracle_present": sum(e["oracle_present"] for e in examples),
        "oracle_absent": sum(not e["oracle_present"] for e in examples),
        "distractors": {"mined": origins["mined"], "random": origins["random"]},
        "answers": dict(Counter(e["answer_source"] for e in examples)),
        "failed": dict(failed),
        "documents": len({e["source_document"] for e in examples}),
    }
    return examples, stats


def _load_split(path: str | Path, chunks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    records = read_jsonl(path, ("query", "query_id", "positive", "positive_id"))
    for lineno, record in enumerate(records, start=1):
        negatives = record.get("negatives") or []
        if not isinstance(negatives, list):
            raise InputError("expected a list", path=path, line=lineno, field="negatives")
    return records


def build_raft_data(
    train_path: str | Path,
    test_path: str | Path,
    snapshot_path: str | Path,
    out_train: str | Path,
    out_test: str | Path,
    config: dict[str, Any],
    *,
    stats_path: str | Path | None = None,
    cache_dir: str | Path = "cache",
) -> dict[str, Any]:
    """Write RAFT train/test JSONL from the mined train/test splits (already split by document)."""
    from ragd_train.snapshot import load_snapshot

    start = time.monotonic()
    cfg = bind(RaftConfig, config)
    chunks = {c["chunk_id"]: c for c in load_snapshot(snapshot_path)}
    train = _load_split(train_path, chunks)
    test = _load_split(test_path, chunks)
    if not train:
        raise InputError("no training records", path=train_path)
    writer = make_answer_writer(cfg, config, cache_dir)
    answers = writer.name if writer is not None else "extractive"
    train_examples, train_stats = assemble(train, chunks, cfg, writer, "train")
    test_examples, test_stats = assemble(test, chunks, cfg, writer, "test")
    if not train_examples:
        raise RagdTrainError(
            f"no RAFT training example passed the answer checks ({train_stats['failed']}); "
            "try raft.answers: extractive"
        )
    train_docs = {e["source_document"] for e in train_examples}
    leaked = train_docs & {e["source_document"] for e in test_examples}
    if leaked:
        raise RagdTrainError(
            f"the RAFT test split shares documents with the training split: {sorted(leaked)}"
        )
    write_jsonl(out_train, train_examples)
    write_jsonl(out_test, test_examples)
    stats = {
        "config": cfg.model_dump(),
        "answer_generator": answers,
        "prompt": prompt_source(),
        "train": train_stats,
        "test": test_stats,
        "wall_time_s": round(time.monotonic() - start, 3),
    }
    if writer is not None:
        stats["llm_calls"] = {"from_cache": writer.cache.hits, "generated": writer.cache.misses}
    failed = Counter(train_stats["failed"]) + Counter(test_stats["failed"])
    log.info(
        "RAFT: %d train / %d test examples, oracle kept in %d of the training examples; answers: %s; "
        "distractors mined %d, random %d; %d failed verification%s",
        len(train_examples),
        len(test_examples),
        train_stats["oracle_present"],
        answers,
        train_stats["distractors"]["mined"],
        train_stats["distractors"]["random"],
        sum(failed.values()),
        f" {dict(failed)}" if failed else "",
    )
    if stats_path is not None:
        write_json(stats_path, stats)
    return stats
