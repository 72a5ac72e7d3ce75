"""A query generator that needs no model: headings, claims, Inverse Cloze Task, keywords, crops.

Each chunk's choices are seeded by its content hash, so an unchanged chunk always
gets the same queries (what incremental rebuilds rely on).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any, TypedDict

from ragd_train.text import content_terms, headings, split_sentences, tokenize


class GeneratedQuery(TypedDict, total=False):
    query: str
    strategy: str
    positive: str  # replaces the chunk text as the positive (Inverse Cloze Task)
    passage: str  # the chunk without the sentence the query was taken from


MIN_QUERY_WORDS = 3
CLAIM_WORDS = (6, 32)
# Structured-abstract labels that open a sentence ("CONCLUSIONS: ...", "Results. ...").
SECTION_LABEL = re.compile(
    r"^(?:conclusions?|interpretations?|results?|findings|significance|summary|background|"
    r"objectives?|purpose|aims?|methods?|context|importance|main outcome measures?)\s*[:.]\s*",
    re.IGNORECASE,
)
CAPS_LABEL = re.compile(r"^[A-Z][A-Z &/]{3,40}[:.]?\s+(?=[A-Z])")  # "CONCLUSIONS These ..."
CONNECTIVE = re.compile(
    r"^(?:therefore|thus|hence|additionally|finally|together|overall|collectively|consequently"
    r"|in (?:summary|conclusion)|taken together),\s+",
    re.IGNORECASE,
)
# Hedging lead-ins of a conclusion ("In summary, these results suggest that ..."): the claim follows.
LEAD_IN = re.compile(
    r"^(?:(?:in (?:summary|conclusion)|taken together|together|overall|thus|therefore|collectively)"
    r",?\s+)?(?:(?:these|our|the(?:se)?|present) (?:results|data|findings|observations|studies|study)"
    r"|we|this (?:study|work))\s+(?:\w+\s+)?(?:suggest|indicate|show|demonstrate|reveal|conclude"
    r"|establish|support|identify|provide evidence|found|find)(?:s|ed)?\s+that\s+",
    re.IGNORECASE,
)


class NoLLMGenerator:
    """Label-free queries from the chunk itself, cycling through ``strategies``."""

    name = "nollm"

    def __init__(self, chunks: list[dict[str, Any]], strategies: list[str], seed: int = 42) -> None:
        self.strategies = list(strategies)
        self.seed = seed
        df: Counter[str] = Counter()
        for chunk in chunks:
            df.update(set(content_terms(chunk["text"])))
        self.df = df
        self.n_docs = max(len(chunks), 1)

    def _rng(self, chunk: dict[str, Any]) -> random.Random:
        return random.Random(f"{self.seed}:{chunk['content_hash']}")

    def generate(self, chunk: dict[str, Any], n: int) -> list[GeneratedQuery]:
        rng = self._rng(chunk)
        out: list[GeneratedQuery] = []
        seen: set[str] = set()
        for strategy in self.strategies * n:  # several passes so n > len(strategies) works
            if len(out) >= n:
                break
            query = getattr(self, f"_{strategy}")(chunk, rng, seen)
            if query and query["query"].lower() not in seen:
                seen.add(query["query"].lower())
                out.append(query)
        return out

    def _heading(self, chunk: dict[str, Any], rng: random.Random, seen: set[str]) -> GeneratedQuery | None:
        """Title-as-query: the document title joined with the chunk's section heading."""
        title = str(chunk.get("metadata", {}).get("title") or "").strip()
        candidates = [h for h in headings(chunk["text"]) if h.lower() != title.lower()]
        for section in candidates or [""]:
            query = f"{title} {section}".strip() if title else section
            if len(query.split()) >= 2 and query.lower() not in seen:
                return {"query": query, "strategy": "heading"}
        return None

    def _claim(self, chunk: dict[str, Any], rng: random.Random, seen: set[str]) -> GeneratedQuery | None:
        """A claim-shaped query: the body's last sentence (often the conclusion), else its first.

        The sentence stays in the positive: a claim is usually stated, or paraphrased, in the
        passage that supports it. Structured-abstract labels ("CONCLUSIONS:") are dropped.
        """
        title = str(chunk.get("metadata", {}).get("title") or "").strip()
        sentences = [
            s
            for s in split_sentences(chunk["text"])
            if not s.startswith("#") and s.strip() != title and s.rstrip().endswith((".", "!"))
        ]
        for sentence in sentences[::-1][:1] + sentences[:1]:
            claim = LEAD_IN.sub(
                "", CONNECTIVE.sub("", SECTION_LABEL.sub("", CAPS_LABEL.sub("", sentence)).strip())
            )
            claim = claim[:1].upper() + claim[1:]
            words = len(claim.split())
            if CLAIM_WORDS[0] <= words <= CLAIM_WORDS[1] and claim.lower() not in seen:
                found: GeneratedQuery = {"query": claim, "strategy": "claim"}
                passage = _without(chunk["text"], sentence)
                if passage is not None:
                    found["passage"] = passage
                return found
        return None

    def _ict(self, chunk: dict[str, Any], rng: random.Random, seen: set[str]) -> GeneratedQuery | None:
        """Inverse Cloze Task: one sentence is the query, the rest of the chunk the positive."""
        sentences = [
            s for s in split_sentences(chunk["text"]) if len(s.split()) >= 6 and not s.startswith("#")
        ]
        rng.shuffle(sentences)
        for sentence in sentences:
            if sentence.lower() in seen:
                continue
            rest = _without(chunk["text"], sentence)
            if rest is not None:
                return {"query": sentence, "strategy": "ict", "positive": rest}
        return None

    def _keywords(self, chunk: dict[str, Any], rng: random.Random, seen: set[str]) -> GeneratedQuery | None:
        """A keyword query: the chunk's highest tf-idf terms in reading order."""
        terms = content_terms(chunk["text"])
        if not terms:
            return None
        tf = Counter(terms)
        score = {t: c * math.log(1 + self.n_docs / self.df.get(t, 1)) for t, c in tf.items() if len(t) > 2}
        k = rng.randint(3, 5)
        top = set(sorted(score, key=lambda t: (-score[t], t))[:k])
        ordered: list[str] = []
        for term in terms:
            if term in top and term not in ordered:
                ordered.append(term)
        query = " ".join(ordered)
        return {"query": query, "strategy": "keywords"} if len(ordered) >= MIN_QUERY_WORDS else None

    def _crop(self, chunk: dict[str, Any], rng: random.Random, seen: set[str]) -> GeneratedQuery | None:
        """Contriever-style random crop of 8-16 words."""
        words = chunk["text"].split()
        if len(words) < 12:
            return None
        size = rng.randint(8, min(16, len(words)))
        start = rng.randint(0, len(words) - size)
        return {"query": " ".join(words[start : start + size]), "strategy": "crop"}


def _without(text: str, sentence: str) -> str | None:
    """``text`` with its one occurrence of ``sentence`` taken out, or None when the sentence is not
    there exactly once or too little (under 10 tokens) would be left."""
    if text.count(sentence) != 1:
        return None
    cut = text.index(sentence)
    before, after = text[:cut].rstrip(" \t"), text[cut + len(sentence) :].lstrip(" \t")
    joiner = "" if before.endswith("\n") or after.startswith("\n") or not before or not after else " "
    rest = (before + joiner + after).strip()
    return rest if len(tokenize(rest)) >= 10 else None
