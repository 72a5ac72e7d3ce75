"""BM25 against hand-computed Okapi scores, and hard-negative mining on hand-made unit vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragd_train.bm25 import BM25
from ragd_train.generate import mining
from ragd_train.generate.mining import RRF_K, mine

K1, B = 1.5, 0.75


# ---------------------------------------------------------------- BM25


def okapi(query: list[str], docs: list[list[str]]) -> list[float]:
    """Textbook Okapi BM25 (k1=1.5, b=0.75, idf = log(1 + (N - df + 0.5) / (df + 0.5)))."""
    n = len(docs)
    avgdl = sum(len(d) for d in docs) / n
    out = []
    for doc in docs:
        score = 0.0
        for term in set(query):
            df = sum(term in d for d in docs)
            tf = doc.count(term)
            if not tf:
                continue
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(doc) / avgdl))
        out.append(score)
    return out


DOCS = ["apple banana apple", "banana cherry", "cherry cherry cherry date"]


def test_bm25_matches_hand_computed_okapi() -> None:
    bm25 = BM25(DOCS)
    tokens = [d.split() for d in DOCS]
    queries = ["apple cherry", "banana", "date apple", "kiwi"]
    got = bm25.scores(queries)
    assert got.shape == (4, 3) and got.dtype == np.float32
    for row, query in zip(got, queries, strict=True):
        np.testing.assert_allclose(row, okapi(query.split(), tokens), rtol=1e-5, atol=1e-6)
    # One number by hand: 'apple' in doc 0 (tf 2, dl 3 = avgdl, df 1 of N 3).
    idf = math.log(1 + 2.5 / 1.5)
    assert got[0, 0] == pytest.approx(idf * 2 * 2.5 / (2 + 1.5), rel=1e-5)
    assert got[0, 0] == pytest.approx(1.40119, rel=1e-4)
    assert got[3].tolist() == [0.0, 0.0, 0.0]  # unknown term


def test_bm25_ignores_stopwords_and_case() -> None:
    bm25 = BM25(["The Apple is red", "a banana"])
    np.testing.assert_allclose(bm25.scores(["what is the APPLE"]), bm25.scores(["apple"]))
    assert bm25.scores(["the is a"]).tolist() == [[0.0, 0.0]]
    # Document length counts content terms only: 'the', 'is' and 'a' are not terms.
    np.testing.assert_allclose(
        bm25.scores(["apple"])[0], okapi(["apple"], [["apple", "red"], ["banana"]]), rtol=1e-5
    )


def test_bm25_longer_document_scores_lower_for_same_tf() -> None:
    bm25 = BM25(["gamma delta", "gamma delta epsilon zeta eta theta"])
    short, long = bm25.scores(["gamma"])[0]
    assert short > long > 0


# ---------------------------------------------------------------- mining helpers


def at_angles(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane at the given angles from the x axis (the query)."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


QUERY = at_angles(0)


class FixedLexical:
    """Stands in for BM25 with a fixed score matrix."""

    def __init__(self, scores: list[list[float]]) -> None:
        self.matrix = np.asarray(scores, dtype=np.float32)
        self.calls: list[list[str]] = []

    def scores(self, queries: list[str]) -> np.ndarray:
        self.calls.append(list(queries))
        return self.matrix[: len(queries)]


def run(corpus: np.ndarray, docs: list[str], positive: int = 0, **kw) -> mining.MiningResult:
    params = {"num_negatives": 10, "bm25_weight": 0.0, "relative_margin": 0.0} | kw
    bm25 = params.pop("bm25", None)
    (result,) = mine(QUERY, corpus, ["q"], bm25, [positive], docs, **params)
    return result


# ---------------------------------------------------------------- exclusions and guard


def test_positive_and_same_document_excluded() -> None:
    corpus = at_angles(0, 10, 20, 30, 40)
    docs = ["A", "A", "B", "C", "B"]
    result = run(corpus, docs, exclude_same_document=True)
    assert result.negatives == [2, 3, 4]
    assert result.negative_scores == [round(math.cos(math.radians(a)), 4) for a in (20, 30, 40)]
    assert result.positive_rank == 0 and result.positive_score == pytest.approx(1.0)
    assert run(corpus, docs, exclude_same_document=False).negatives == [1, 2, 3, 4]


def test_num_negatives_respected() -> None:
    corpus = at_angles(0, 10, 20, 30, 40)
    docs = list("ABCDE")
    assert run(corpus, docs, num_negatives=2).negatives == [1, 2]
    assert len(run(corpus, docs, num_negatives=50).negatives) == 4  # fewer exist
    none = run(corpus, docs, num_negatives=0)
    assert none.negatives == [] and none.negative_scores == []
    assert none.positive_score == pytest.approx(1.0)


def test_relative_margin_drops_near_duplicates_of_the_positive() -> None:
    # The positive sits at 30 degrees (cos 0.866); 31 degrees is a near duplicate (0.857),
    # 10 degrees beats the positive outright (0.985), 45 degrees is a fair negative (0.707).
    corpus = at_angles(30, 10, 31, 45)
    docs = list("PABC")
    guarded = run(corpus, docs, relative_margin=0.05)  # ceiling 0.95 * 0.866 = 0.823
    assert guarded.negatives == [3]
    assert guarded.positive_rank == 1
    assert guarded.positive_score == pytest.approx(math.cos(math.radians(30)), rel=1e-6)
    unguarded = run(corpus, docs, relative_margin=0.0)  # ceiling = the positive's own score
    assert unguarded.negatives == [2, 3]
    loose = run(corpus, docs, relative_margin=0.2)  # ceiling 0.693: nothing is left
    assert loose.negatives == []


def test_relative_margin_guard_with_negative_positive_score() -> None:
    # The positive points away from the query (cos -0.5); a candidate at cos -0.49 ranks above it.
    corpus = at_angles(120, 119.4, 170)
    result = run(corpus, list("PAB"), relative_margin=0.05)
    assert 1 not in result.negatives, "a candidate scoring above the positive is a likely false negative"


# ---------------------------------------------------------------- fusion


def test_reciprocal_rank_fusion_order() -> None:
    corpus = at_angles(0, 10, 20, 30, 40)  # dense ranks: P=0, a=1, b=2, c=3, d=4
    docs = list("Pabcd")
    lexical = FixedLexical([[3.0, 0.0, 0.0, 4.0, 5.0]])  # BM25 ranks: d=0, c=1, P=2; a, b unmatched

    def expected(weight: float) -> list[int]:
        fused = {1: 1 / (RRF_K + 1), 2: 1 / (RRF_K + 2)}
        fused[3] = 1 / (RRF_K + 3) + weight / (RRF_K + 1)
        fused[4] = 1 / (RRF_K + 4) + weight / (RRF_K + 0)
        return sorted(fused, key=lambda i: -fused[i])

    assert run(corpus, docs).negatives == [1, 2, 3, 4]  # dense only
    assert expected(1.0) == [4, 3, 1, 2]
    assert run(corpus, docs, bm25=lexical, bm25_weight=1.0).negatives == [4, 3, 1, 2]
    assert expected(0.5) == [3, 4, 1, 2]
    assert run(corpus, docs, bm25=lexical, bm25_weight=0.5).negatives == [3, 4, 1, 2]
    # Scores reported are always the dense ones.
    result = run(corpus, docs, bm25=lexical, bm25_weight=1.0)
    assert result.negative_scores == [round(math.cos(math.radians(a)), 4) for a in (40, 30, 10, 20)]


def test_bm25_weight_zero_never_calls_bm25() -> None:
    lexical = FixedLexical([[0.0, 0.0, 0.0, 4.0, 5.0]])
    run(at_angles(0, 10, 20, 30, 40), list("Pabcd"), bm25=lexical, bm25_weight=0.0)
    assert lexical.calls == []


def test_candidates_limit_each_retriever() -> None:
    corpus = at_angles(0, 10, 20, 30, 40)
    lexical = FixedLexical([[3.0, 0.0, 0.0, 4.0, 5.0]])
    # Dense top 2 = {P, a}; BM25 top 2 = {d, c}; b is in neither list.
    result = run(corpus, list("Pabcd"), bm25=lexical, bm25_weight=1.0, candidates=2)
    assert result.negatives == [4, 1, 3]  # d: 1/60; a and c tie at 1/61, lower index first


def test_real_bm25_fusion_pulls_in_lexical_matches() -> None:
    texts = ["token rotation policy", "unrelated words entirely", "other filler text", "token rotation"]
    corpus = at_angles(0, 10, 20, 80)  # the lexical twin (3) is far away densely
    dense_only = run(corpus, list("PABC"), num_negatives=2)
    fused = mine(
        QUERY, corpus, ["token rotation"], BM25(texts), [0], list("PABC"), num_negatives=2, relative_margin=0
    )[0]
    assert dense_only.negatives == [1, 2]
    assert fused.negatives == [3, 1]  # 1/(60+3) + 1/(60+0) beats 1/(60+1)


# ---------------------------------------------------------------- blocks and brute force


def random_problem(seed: int, n_corpus: int = 60, n_queries: int = 23, dim: int = 16):
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(n_corpus, dim))
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    positives = rng.integers(0, n_corpus, size=n_queries).tolist()
    queries = corpus[positives] + 0.3 * rng.normal(size=(n_queries, dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    docs = [f"doc{i // 3}" for i in range(n_corpus)]  # three chunks per document
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda"]
    texts = [" ".join(rng.choice(words, size=5)) for _ in range(n_corpus)]
    query_texts = [" ".join(rng.choice(words, size=2)) for _ in range(n_queries)]
    return queries, corpus, query_texts, texts, positives, docs


def as_tuples(results: list[mining.MiningResult]) -> list[tuple]:
    # BLAS may round the last bit differently for another block shape: compare scores to 1e-9.
    return [(r.negatives, r.negative_scores, r.positive_rank, round(r.positive_score, 9)) for r in results]


def test_query_blocks_give_the_same_results_as_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    queries, corpus, qtexts, texts, positives, docs = random_problem(1)
    bm25 = BM25(texts)
    kw = {"num_negatives": 4, "candidates": 20, "bm25_weight": 0.7, "relative_margin": 0.05}
    whole = mine(queries, corpus, qtexts, bm25, positives, docs, **kw)
    assert len(queries) < mining.QUERY_BLOCK
    for block in (1, 2, 5, 22):
        monkeypatch.setattr(mining, "QUERY_BLOCK", block)
        blocked = mine(queries, corpus, qtexts, bm25, positives, docs, **kw)
        assert len(blocked) == len(queries)
        assert as_tuples(blocked) == as_tuples(whole), f"block size {block}"
    assert any(r.negatives for r in whole)


@pytest.mark.parametrize("exclude_same_document", [False, True])
@pytest.mark.parametrize("candidates", [60, 12])
def test_dense_only_matches_brute_force_ranking(exclude_same_document: bool, candidates: int) -> None:
    queries, corpus, qtexts, _texts, positives, docs = random_problem(2)
    k = 5
    results = mine(
        queries,
        corpus,
        qtexts,
        None,
        positives,
        docs,
        num_negatives=k,
        candidates=candidates,
        bm25_weight=0.0,
        relative_margin=0.0,
        exclude_same_document=exclude_same_document,
    )
    for q, pos, result in zip(queries, positives, results, strict=True):
        scores = corpus @ q
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[:candidates]
        expected = [
            i
            for i in order
            if i != pos and scores[i] <= scores[pos] and not (exclude_same_document and docs[i] == docs[pos])
        ][:k]
        assert result.negatives == expected
        assert result.negative_scores == [round(float(scores[i]), 4) for i in expected]
        assert result.positive_rank == int((scores > scores[pos]).sum())
        assert result.positive_score == pytest.approx(scores[pos])
    assert sum(len(r.negatives) for r in results) > len(results) * 2  # the check is not vacuous
