"""Character-budget chunking that prefers paragraph, sentence, then word breaks."""

from __future__ import annotations

import re

# Break candidates, strongest first. Each match's ``end()`` is where a chunk may end.
_PARAGRAPH = re.compile(r"\S(?=[ \t\r\f\v]*\n[ \t\r\f\v]*\n)")
_SENTENCE = re.compile(r"[.!?…][\"'”’)\]]*(?=\s)")
_WORD = re.compile(r"\S(?=\s)")
_BREAKS = (_PARAGRAPH, _SENTENCE, _WORD)
_SPACE = re.compile(r"\s")
_LOOKAHEAD = 64


def chunk_text(text: str, chunk_size: int = 800, chunk_overlap: int = 100) -> list[tuple[int, int, str]]:
    """Split ``text`` into ``(start_char, end_char, chunk)`` triples.

    Each chunk is at most ``chunk_size`` characters, whitespace-stripped and
    non-empty, and ``text[start_char:end_char] == chunk``. A chunk ends at the
    last paragraph break inside its budget, else the last sentence end, else the
    last word end, else it is cut hard. The next chunk starts about
    ``chunk_overlap`` characters before the previous end, on a word start.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be >= 0 and < chunk_size ({chunk_size}), got {chunk_overlap}")
    chunks: list[tuple[int, int, str]] = []
    n = len(text)
    start, prev_end = _skip_space(text, 0), 0
    while start < n:
        end = _rstrip_end(text, start, _chunk_end(text, start, chunk_size, chunk_overlap))
        if end <= prev_end:
            # The overlap window held nothing new: restart right after the last chunk.
            start = _skip_space(text, prev_end)
            continue
        chunks.append((start, end, text[start:end]))
        prev_end = end
        if _skip_space(text, end) >= n:
            break
        start = _skip_space(text, _next_start(text, start, end, chunk_overlap))
    return chunks


def _chunk_end(text: str, start: int, size: int, overlap: int) -> int:
    """Return where the chunk starting at ``start`` should end (exclusive)."""
    limit = start + size
    if limit >= len(text):
        return len(text)
    # Don't accept a break so early that the chunk is tiny or the overlap
    # would stall progress.
    floor = start + max(overlap + 1, size // 2)
    # Look a little past ``limit`` so the lookaheads can see what follows.
    window_end = min(len(text), limit + _LOOKAHEAD)
    for pattern in _BREAKS:
        ends = [m.end() for m in pattern.finditer(text, floor - 1, window_end) if m.end() <= limit]
        if pattern is _PARAGRAPH:
            # Keep a Markdown heading with the paragraph it introduces.
            ends = [end for end in ends if not _ends_heading(text, end)] or ends
        if ends:
            return ends[-1]
    return limit


def _ends_heading(text: str, end: int) -> bool:
    """True if the line ending at ``end`` is a Markdown ``#`` heading."""
    line = text[text.rfind("\n", 0, end) + 1 : end].lstrip()
    return line.startswith("#") and line.lstrip("#")[:1] in (" ", "\t")


def _next_start(text: str, start: int, end: int, overlap: int) -> int:
    """Start of the next chunk: ``overlap`` chars back from ``end``, on a word start."""
    if overlap == 0:
        return end
    candidate = max(end - overlap, start + 1)
    if candidate > 0 and not text[candidate - 1].isspace():
        # Mid-word: move forward to the next word start, if one lies before ``end``.
        match = _SPACE.search(text, candidate, end)
        if match is not None:
            candidate = match.end()
    return candidate


def _skip_space(text: str, pos: int) -> int:
    """Index of the first non-whitespace character at or after ``pos``."""
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos


def _rstrip_end(text: str, start: int, end: int) -> int:
    """Move ``end`` back over trailing whitespace (never before ``start + 1``)."""
    while end > start + 1 and text[end - 1].isspace():
        end -= 1
    return end
