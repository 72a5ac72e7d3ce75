"""Small text utilities shared by generators, BM25 and the filters."""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*[A-Za-z0-9]|[A-Za-z0-9]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
STOPWORDS = frozenset(
    "a an and are as at be by can for from has have how i if in into is it its of on or that the "
    "their then there these this to was what when where which who why will with you your we our do does "
    "not no yes than so such been being also may must should would could all any each other more most "
    "use used using".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (keeps dotted config keys and codes like NV-4031 whole)."""
    return [t.lower() for t in WORD.findall(text)]


def content_terms(text: str) -> list[str]:
    """Tokens without stopwords, for lexical scoring."""
    return [t for t in tokenize(text) if t not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences; markdown headings and list items count as their own lines."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*").strip()
        if not line:
            continue
        sentences.extend(s.strip() for s in SENTENCE_END.split(line) if s.strip())
    return sentences


def headings(text: str) -> list[str]:
    """Markdown headings in ``text``, without the leading hashes."""
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"^#{1,6}\s+\S", line)]
