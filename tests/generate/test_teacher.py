"""The corpus-only teacher: BM25 fused with dense scores, and its labelled candidate pairs."""

from __future__ import annotations

import numpy as np
import pytest

from ragd_train.bm25 import BM25
from ragd_train.generate.teacher import teacher_pairs, teacher_scores, zscore


def test_teacher_orders_like_the_z_score_fusion() -> None:
    rng = np.random.default_rng(0)
    dense, lexical = rng.normal(size=(6, 40)), rng.gamma(2.0, size=(6, 40))
    for share in (0.0, 0.3, 0.6):
        fused = (1 - share) * zscore(dense) + share * zscore(lexical)
        got = teacher_scores(dense, lexical, share)
        assert (np.argsort(-got, axis=1) == np.argsort(-fused, axis=1)).all()
    np.testing.assert_allclose(teacher_scores(dense, lexical, 0.0), dense)


def test_teacher_rejects_a_share_of_one() -> None:
    with pytest.raises(ValueError, match="bm25_share"):
        teacher_scores(np.zeros((1, 3)), np.zeros((1, 3)), 1.0)


def _corpus() -> tuple[list[str], list[str], np.ndarray]:
    texts = [
        "aspirin lowers the risk of stroke in adults",
        "aspirin dosage for children with fever",
        "statins reduce cholesterol and stroke risk",
        "stroke rehabilitation after surgery",
        "vitamin d and bone density in the elderly",
        "aspirin resistance in stroke patients",
    ]
    documents = ["a", "a", "b", "c", "d", "e"]  # chunks 0 and 1 belong to one document
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(len(texts), 8)).astype(np.float32)
    return texts, documents, emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_pairs_skip_the_source_document_and_carry_the_teacher_margin() -> None:
    texts, documents, emb = _corpus()
    bm25 = BM25(texts)
    queries = ["aspirin and stroke", "stroke risk"]
    q_emb = emb[[0, 2]] * 0.9 + emb[[5, 3]] * 0.1
    pairs = teacher_pairs(q_emb, emb, queries, bm25, [0, 2], documents, candidates=6, bm25_share=0.3, seed=3)
    scores = teacher_scores(q_emb @ emb.T, bm25.scores(queries), 0.3)
    for row, (pair, source) in enumerate(zip(pairs, [0, 2], strict=True)):
        assert pair is not None and pair.first != pair.second
        assert documents[pair.first] != documents[source] and documents[pair.second] != documents[source]
        assert pair.margin == pytest.approx(scores[row, pair.first] - scores[row, pair.second], abs=1e-5)
    again = teacher_pairs(q_emb, emb, queries, bm25, [0, 2], documents, candidates=6, bm25_share=0.3, seed=3)
    assert again == pairs
    # a query keeps its pair when another query is added before it (seeded by its own text)
    alone = teacher_pairs(
        q_emb[1:], emb, queries[1:], bm25, [2], documents, candidates=6, bm25_share=0.3, seed=3
    )
    assert alone == pairs[1:]


def test_pairs_need_two_candidates_outside_the_source() -> None:
    texts, documents, emb = _corpus()
    # any top 2 of these 3 chunks holds a chunk of the source document "a": one candidate at most
    pairs = teacher_pairs(emb[:1], emb[:3], ["aspirin"], BM25(texts[:3]), [0], documents[:3], candidates=2)
    assert pairs == [None]


def test_first_top_draws_the_first_candidate_from_the_head_of_the_ranking() -> None:
    texts, documents, emb = _corpus()
    bm25 = BM25(texts)
    rng = np.random.default_rng(5)
    queries = [f"aspirin stroke {i}" for i in range(30)]
    q_emb = rng.normal(size=(30, 8)).astype(np.float32)
    sources = [4] * 30  # document "d": every other chunk is a candidate
    scores = teacher_scores(q_emb @ emb.T, bm25.scores(queries), 0.3)
    pairs = teacher_pairs(q_emb, emb, queries, bm25, sources, documents, candidates=6, first_top=1)
    for row, pair in enumerate(pairs):
        ranked = [j for j in np.argsort(-scores[row], kind="stable") if documents[j] != "d"]
        assert pair is not None and pair.first == ranked[0] and pair.second in ranked[1:]
        assert pair.margin >= 0
    # without first_top, the first is not always the teacher's best
    uniform = teacher_pairs(q_emb, emb, queries, bm25, sources, documents, candidates=6)
    assert any(p is not None and p.margin < 0 for p in uniform)
