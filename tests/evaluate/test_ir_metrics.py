"""IR metrics: hand-computed cases and agreement with sentence-transformers' evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragd_train.evaluate.ir_metrics import evaluate, mrr_at_k, ndcg_at_k, normalize, recall_at_k, retrieve


def test_ndcg_hand_computed_binary():
    # relevant at ranks 2 and 4 of 2 relevant: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    value = ndcg_at_k([["a", "r1", "b", "r2"]], [{"r1": 1, "r2": 1}], 10)[0]
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert value == pytest.approx(expected, abs=1e-12)


def test_ndcg_graded_and_cutoff():
    qrels = {"x": 2, "y": 1, "z": 0}  # grade 0 is not relevant
    value = ndcg_at_k([["y", "z", "x"]], [qrels], 2)[0]
    # DCG@2 = 1/log2(2) + 0 ; IDCG@2 = 2 + 1/log2(3)
    assert value == pytest.approx(1 / (2 + 1 / math.log2(3)), abs=1e-12)
    assert ndcg_at_k([["x", "y"]], [qrels], 10)[0] == pytest.approx(1.0)


def test_recall_and_mrr_hand_computed():
    ranked = [["a", "b", "r1", "c", "r2"], ["r3", "a"], ["a", "b"]]
    rel = [{"r1": 1, "r2": 1, "r9": 1}, {"r3": 1}, {"r4": 1}]
    assert recall_at_k(ranked, rel, 3).tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert recall_at_k(ranked, rel, 5).tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert mrr_at_k(ranked, rel, 10).tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert mrr_at_k(ranked, rel, 2).tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_retrieve_exact_topk_blocks_and_ties():
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(7, 5)), rng.normal(size=(40, 5))
    idx, scores = retrieve(q, c, 6, block=3)
    sims = normalize(q) @ normalize(c).T
    for row in range(7):
        assert idx[row].tolist() == np.argsort(-sims[row], kind="stable")[:6].tolist()
        assert np.allclose(scores[row], sims[row, idx[row]], atol=1e-6)
    dup = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    idx, _ = retrieve(np.array([[1.0, 0.0]]), dup, 2)
    assert idx[0].tolist() == [0, 2]  # a tie goes to the earlier document
    idx, _ = retrieve(np.array([[1.0, 0.0]]), dup, 10)  # k larger than the corpus
    assert idx[0].tolist() == [0, 2, 3, 1]


def test_matryoshka_truncation_renormalises():
    emb = np.array([[3.0, 4.0, 100.0]])
    out = normalize(emb, 2)
    assert np.allclose(out, [[0.6, 0.8]])
    with pytest.raises(ValueError):
        normalize(emb, 4)


def _synthetic(seed: int = 1):
    rng = np.random.default_rng(seed)
    n_docs, n_q, dim = 60, 15, 16
    corpus_emb = rng.normal(size=(n_docs, dim)).astype(np.float32)
    query_emb = rng.normal(size=(n_q, dim)).astype(np.float32)
    # make some relevant documents close to their queries, others random
    corpus = {f"d{i:03d}": f"doc {i}" for i in range(n_docs)}
    queries = {f"q{i}": f"query {i}" for i in range(n_q)}
    qrels: dict[str, dict[str, int]] = {}
    for i in range(n_q):
        docs = rng.choice(n_docs, size=1 + i % 3, replace=False)
        qrels[f"q{i}"] = {f"d{d:03d}": 1 for d in docs}
        corpus_emb[docs[0]] += query_emb[i] * (i % 4)
    qrels["q0"] = {}  # no relevant document: skipped
    return queries, corpus, qrels, query_emb, corpus_emb


def test_agrees_with_sentence_transformers_evaluator():
    torch = pytest.importorskip("torch")
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.util import cos_sim

    queries, corpus, qrels, query_emb, corpus_emb = _synthetic()

    class Stub:
        """Encodes by lookup: queries from query_emb (rows in queries' order)."""

        def encode_query(self, texts, truncate_dim=None, **_):
            rows = [list(queries.values()).index(t) for t in texts]
            return torch.tensor(query_emb[rows][:, :truncate_dim])

    relevant = {q: set(d) for q, d in qrels.items() if d}
    for dim in (16, 8):
        st = InformationRetrievalEvaluator(
            {q: t for q, t in queries.items() if q in relevant},
            corpus,
            relevant,
            mrr_at_k=[10],
            ndcg_at_k=[10],
            accuracy_at_k=[1],
            precision_recall_at_k=[5, 10],
            map_at_k=[10],
            score_functions={"cos": cos_sim},
            truncate_dim=dim,
            write_csv=False,
        )
        c = torch.tensor(corpus_emb[:, :dim])
        st_scores = st.compute_metrices(Stub(), corpus_embeddings=c)["cos"]
        ours = evaluate(
            None,
            queries,
            corpus,
            qrels,
            ks={"ndcg": [10], "recall": [5, 10], "mrr": [10]},
            dims=[dim],
            query_emb=query_emb,
            corpus_emb=corpus_emb,
        )
        assert len(ours.query_ids) == len(relevant)
        mean = ours.mean()[dim]
        assert mean["ndcg@10"] == pytest.approx(st_scores["ndcg@k"][10], abs=1e-6)
        assert mean["mrr@10"] == pytest.approx(st_scores["mrr@k"][10], abs=1e-6)
        assert mean["recall@5"] == pytest.approx(st_scores["recall@k"][5], abs=1e-6)
        assert mean["recall@10"] == pytest.approx(st_scores["recall@k"][10], abs=1e-6)


def test_evaluate_requires_embeddings_or_model():
    queries, corpus, qrels, query_emb, _ = _synthetic()
    with pytest.raises(ValueError):
        evaluate(None, queries, corpus, qrels, query_emb=query_emb)
