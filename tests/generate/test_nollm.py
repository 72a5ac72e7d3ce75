"""The no-LLM query generator on real demo chunks: every strategy, determinism, ICT, no duplicates."""

from __future__ import annotations

import re

import pytest

from ragd_train.generate.nollm import NoLLMGenerator
from ragd_train.snapshot import content_hash, make_chunk, read_source
from ragd_train.text import content_terms, split_sentences, tokenize

try:
    from tests.conftest import DEMO
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from conftest import DEMO

STRATEGIES = ["heading", "ict", "keywords", "crop"]


@pytest.fixture(scope="module")
def chunks() -> list[dict]:
    return read_source("documents", {"path": str(DEMO)})


def one(generator: NoLLMGenerator, chunk: dict) -> dict | None:
    out = generator.generate(chunk, 1)
    assert len(out) <= 1
    return out[0] if out else None


# ---------------------------------------------------------------- each strategy


def test_heading_is_title_plus_a_section_heading(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["heading"])
    produced = 0
    for chunk in chunks:
        q = one(gen, chunk)
        if q is None:
            continue
        produced += 1
        assert q["strategy"] == "heading" and "positive" not in q
        title = chunk["metadata"]["title"]
        assert q["query"].startswith(title)
        section = q["query"][len(title) :].strip()
        sections = [line.lstrip("#").strip() for line in chunk["text"].splitlines() if line.startswith("#")]
        assert section == "" or section in sections
    assert produced >= len(chunks) * 0.9
    first = chunks[0]  # "# Access Policies" then "## Writing a policy"
    assert one(gen, first)["query"] == "Access Policies Writing a policy"


def test_ict_query_is_a_sentence_and_positive_is_the_rest(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["ict"])
    for chunk in chunks:
        q = one(gen, chunk)
        assert q is not None, chunk["chunk_id"]
        assert q["strategy"] == "ict"
        assert q["query"] in split_sentences(chunk["text"])
        assert len(q["query"].split()) >= 6 and not q["query"].startswith("#")
        assert q["query"] in chunk["text"]
        assert q["query"] not in q["positive"], "ICT must remove the sentence from the positive"
        assert len(tokenize(q["positive"])) >= 10
        # What is left is the chunk's other words, in order.
        removed = chunk["text"].replace(q["query"], " ", 1)
        assert q["positive"].split() == removed.split()


def test_ict_needs_a_long_enough_rest() -> None:
    short = make_chunk("d_chunk_0", "d", "This single sentence has more than six words in it.", "d.md", 0)
    assert NoLLMGenerator([short], ["ict"]).generate(short, 2) == []


def test_ict_positive_never_contains_the_query_sentence() -> None:
    sentence = "Tokens expire after ninety days unless they are renewed."
    text = f"{sentence} Renewal is done from the console.\n\nRemember this rule well: {sentence}"
    chunk = make_chunk("d_chunk_0", "d", text, "d.md", 0)
    gen = NoLLMGenerator([chunk], ["ict"])
    for q in gen.generate(chunk, 3):
        assert q["query"] not in q["positive"]


def test_ict_positive_keeps_the_rest_of_the_chunk_verbatim() -> None:
    text = (
        "Policies are YAML documents made of rules and capabilities.\n\n"
        "```yaml\nrules:\n  - path: secrets/payments/*\n    allow: [read, list]\n"
        "  - path: files/payments/**\n    allow: [read, write, delete, share]\n```"
    )
    chunk = make_chunk("d_chunk_0", "d", text, "d.md", 0)
    (q,) = NoLLMGenerator([chunk], ["ict"]).generate(chunk, 1)
    assert q["query"] == "Policies are YAML documents made of rules and capabilities."
    assert "\n  - path: secrets/payments/*\n    allow: [read, list]" in q["positive"]


def test_keywords_are_top_terms_in_reading_order(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["keywords"])
    for chunk in chunks:
        q = one(gen, chunk)
        assert q is not None and q["strategy"] == "keywords"
        words = q["query"].split()
        assert 3 <= len(words) <= 5
        assert len(set(words)) == len(words)
        terms = content_terms(chunk["text"])
        assert all(w in terms and len(w) > 2 for w in words)
        firsts = [terms.index(w) for w in words]
        assert firsts == sorted(firsts), "keywords keep the chunk's reading order"


def test_keywords_prefer_rare_terms() -> None:
    common = "gateway"
    docs = [
        make_chunk(f"d{i}_chunk_0", f"d{i}", f"{common} filler{i} words here", "x.md", 0) for i in range(5)
    ]
    target = make_chunk("t_chunk_0", "t", f"{common} zebra quokka axolotl narwhal", "t.md", 0)
    gen = NoLLMGenerator([*docs, target], ["keywords"])
    words = gen.generate(target, 1)[0]["query"].split()
    # The four rare terms outscore 'gateway' (in every chunk); it can only be the fifth keyword.
    assert set(words) - {"gateway"} <= {"zebra", "quokka", "axolotl", "narwhal"}
    assert len(set(words) & {"zebra", "quokka", "axolotl", "narwhal"}) >= 3


def test_crop_is_a_contiguous_window_of_8_to_16_words(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["crop"])
    for chunk in chunks:
        q = one(gen, chunk)
        assert q is not None and q["strategy"] == "crop"
        words, query = chunk["text"].split(), q["query"].split()
        assert 8 <= len(query) <= 16
        starts = [i for i in range(len(words)) if words[i : i + len(query)] == query]
        assert starts, "crop must be a contiguous run of the chunk's words"


def test_crop_skips_short_chunks() -> None:
    short = make_chunk("d_chunk_0", "d", "only eleven words are in this chunk so no crop here", "d.md", 0)
    assert len(short["text"].split()) == 11
    assert NoLLMGenerator([short], ["crop"]).generate(short, 3) == []


# ---------------------------------------------------------------- determinism


def test_same_content_hash_gives_same_queries(chunks: list[dict]) -> None:
    a = NoLLMGenerator(chunks, STRATEGIES, seed=7)
    b = NoLLMGenerator(chunks, STRATEGIES, seed=7)
    for chunk in chunks[:40]:
        moved = {**chunk, "chunk_id": "elsewhere_chunk_9", "document_id": "elsewhere"}
        assert a.generate(chunk, 4) == b.generate(moved, 4)
        assert a.generate(chunk, 4) == a.generate(chunk, 4)  # no state carried between calls


def test_random_choices_follow_the_content_hash_and_seed(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["crop"], seed=7)
    other_seed = NoLLMGenerator(chunks, ["crop"], seed=8)
    differ_seed = sum(gen.generate(c, 1) != other_seed.generate(c, 1) for c in chunks)
    assert differ_seed > len(chunks) // 2
    rehashed = [{**c, "content_hash": content_hash(c["text"] + "x")} for c in chunks]
    differ_hash = sum(gen.generate(c, 1) != gen.generate(r, 1) for c, r in zip(chunks, rehashed, strict=True))
    assert differ_hash > len(chunks) // 2


# ---------------------------------------------------------------- counts and duplicates


def is_subsequence(items: list[str], of: list[str]) -> bool:
    it = iter(of)
    return all(any(x == y for y in it) for x in items)


def test_n_beyond_the_strategy_count_cycles_again(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, STRATEGIES)
    long = [c for c in chunks if len(c["text"].split()) > 80]
    assert long
    for chunk in long:
        out = gen.generate(chunk, 7)
        assert len(out) == 7, chunk["chunk_id"]
        strategies = [q["strategy"] for q in out]
        assert is_subsequence(strategies, STRATEGIES * 7), strategies  # one pass after another


def test_single_strategy_repeats_up_to_n_distinct(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["ict"])
    chunk = max(chunks, key=lambda c: len(split_sentences(c["text"])))
    out = gen.generate(chunk, 3)
    assert len(out) == 3 and all(q["strategy"] == "ict" for q in out)
    assert len({q["query"] for q in out}) == 3


def test_keyword_passes_give_distinct_subsets_of_the_top_terms(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, ["keywords"])
    out = gen.generate(chunks[0], 5)
    assert 1 <= len(out) <= 3  # k is drawn from 3..5, so at most three distinct keyword queries
    queries = [q["query"] for q in out]
    assert len(set(queries)) == len(queries)
    nested = sorted((set(q.split()) for q in queries), key=len)
    assert all(a < b for a, b in zip(nested, nested[1:], strict=False)), "top-3 within top-4 within top-5"


def test_no_duplicate_queries(chunks: list[dict]) -> None:
    gen = NoLLMGenerator(chunks, STRATEGIES)
    for chunk in chunks:
        out = gen.generate(chunk, 10)
        lowered = [q["query"].lower() for q in out]
        assert len(lowered) == len(set(lowered)), chunk["chunk_id"]
        assert all(
            q["query"].strip() and not re.search(r"\s{2,}", q["query"]) for q in out if q["strategy"] != "ict"
        )


def test_claim_strategy_turns_a_conclusion_into_a_claim() -> None:
    from ragd_train.generate.nollm import NoLLMGenerator

    text = (
        "Title of the study\n\nWe measured the effect of vitamin D in 400 adults over two years. "
        "Bone density was recorded every six months. "
        "CONCLUSIONS: Taken together, these results suggest that "
        "vitamin D supplementation reduces fracture risk."
    )
    chunk = {
        "chunk_id": "d_chunk_0",
        "text": text,
        "content_hash": "h",
        "metadata": {"title": "Title of the study"},
    }
    (query,) = NoLLMGenerator([chunk], ["claim"]).generate(chunk, 1)
    # the passage a held-out claim is evaluated against: the chunk without the claim's sentence
    passage = (
        "Title of the study\n\nWe measured the effect of vitamin D in 400 adults over two years. "
        "Bone density was recorded every six months."
    )
    assert query == {
        "query": "Vitamin D supplementation reduces fracture risk.",
        "strategy": "claim",
        "passage": passage,
    }
