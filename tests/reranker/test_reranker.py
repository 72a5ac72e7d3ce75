"""Reranker training on a tiny local model: trainer, resolver fallback, ragd's Reranker protocol, evaluation,
and one real Snakemake run of the demo target."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.evaluate.reranker import evaluate_rerankers, markdown_reranker_report, reranker_message
from ragd_train.hub import ModelNotFoundError
from ragd_train.jsonl_io import write_jsonl
from ragd_train.ragd.hints import ragd_reranker_hint
from ragd_train.reranker.scoring import FineTunedReranker, rerank, with_score
from ragd_train.reranker.train import (
    RerankerTrainingConfig,
    choose_kind,
    load_reranker_examples,
    resolve_reranker_base,
    train_reranker,
)
from ragd_train.settings import bind

ROOT = Path(__file__).resolve().parents[2]
MISSING = "cross-encoder/no-such-reranker-offline"

DOCS = {
    "d1": "Key rotation: run nimbus key rotate to re-wrap the master key.",
    "d2": "The API and web interface listen on port 8443 over TLS.",
    "d3": "Backups are retained for 30 days unless a retention policy says otherwise.",
    "d4": "MFA: users enrol a TOTP app or a WebAuthn key from their profile page.",
    "d5": "Rate limits: each token may send 600 requests per minute before NV-4290.",
    "d6": "Logs go to /var/log/nimbus/ and rotate daily at midnight.",
}
QUERIES = {
    "d1": "how do I rotate the master key",
    "d2": "what port does the API use",
    "d3": "how long are backups kept",
    "d4": "enable two factor login",
    "d5": "limit requests per minute",
    "d6": "where are logs written",
}


def _records(negatives: int = 2) -> list[dict]:
    ids = list(DOCS)
    records = []
    for i, doc in enumerate(ids):
        others = [ids[(i + j) % len(ids)] for j in range(1, negatives + 1)]
        records.append(
            {
                "query": QUERIES[doc],
                "query_id": f"q{i}",
                "positive": DOCS[doc],
                "positive_id": doc,
                "source_document": doc,
                "negatives": [{"id": o, "text": DOCS[o]} for o in others],
            }
        )
    return records


def _cfg(base: Path, **kw) -> RerankerTrainingConfig:
    values = dict(
        kind="cross-encoder",
        base_model=str(base),
        epochs=2,
        batch_size=6,
        learning_rate=1e-3,
        max_length=64,
        negatives_per_query=2,
        seed=3,
    )
    values.update(kw)
    return RerankerTrainingConfig(**values)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rr-data") / "train.jsonl"
    write_jsonl(path, _records())
    return path


@pytest.fixture(scope="module")
def trained(tiny_model: Path, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cross-encoder (fresh head on the tiny BERT) trained with BCE; reused by several tests."""
    out = tmp_path_factory.mktemp("rr-models") / "tiny-reranker"
    train_reranker(train_file, out, _cfg(tiny_model))
    return out


# ---------------------------------------------------------------- configuration and data


def test_config_binds_the_reranker_section_and_the_seed() -> None:
    cfg = bind(
        RerankerTrainingConfig,
        {"seed": 7, "reranker": {"loss": "lambda", "negatives_per_query": 3, "learning_rate": "1e-4"}},
    )
    assert (cfg.loss, cfg.negatives_per_query, cfg.learning_rate, cfg.seed) == ("lambda", 3, 1e-4, 7)
    assert cfg.base_model == "cross-encoder/ms-marco-MiniLM-L-6-v2"  # ragd's default reranker
    with pytest.raises(ValidationError, match="kind"):
        RerankerTrainingConfig(kind="splade")


def test_examples_have_uniform_negatives(tmp_path: Path) -> None:
    records = _records(negatives=2)
    records[0]["negatives"] = []  # topped up from other documents
    path = tmp_path / "t.jsonl"
    write_jsonl(path, records)
    rows = load_reranker_examples(path, negatives=3, seed=1)
    assert all(len(r["negatives"]) == 3 for r in rows)
    assert DOCS["d1"] not in rows[0]["negatives"] and rows[0]["positive"] == DOCS["d1"]
    assert rows[1]["negatives"][:2] == [DOCS["d3"], DOCS["d4"]], "mined negatives come first"
    lonely = tmp_path / "one.jsonl"
    write_jsonl(lonely, [{"query": "q", "positive": "p"}])
    with pytest.raises(InputError, match="needs negatives"):
        load_reranker_examples(lonely, 1, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "positive": "b"}\n{"query": "c"}\n')
    with pytest.raises(InputError) as err:
        load_reranker_examples(bad, 1, 1)
    assert str(err.value) == f"{bad}:2: field 'positive': missing required field"


# ---------------------------------------------------------------- resolver fallback


def test_auto_kind_trains_colbert_unless_a_trained_cross_encoder_is_offline(
    tiny_model: Path, trained: Path
) -> None:
    kind, why = choose_kind(RerankerTrainingConfig(base_model=MISSING, fallback_model=str(tiny_model)))
    assert kind == "colbert" and MISSING in why and "reranker.kind: cross-encoder" in why
    assert choose_kind(RerankerTrainingConfig(base_model=str(tiny_model)))[0] == "colbert"  # no head
    assert choose_kind(RerankerTrainingConfig(base_model=str(trained))) == ("cross-encoder", None)
    forced = RerankerTrainingConfig(kind="cross-encoder", base_model=MISSING)
    assert choose_kind(forced) == ("cross-encoder", None)


def test_resolver_falls_back_with_a_clear_message(tiny_model: Path, trained: Path) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    base = resolve_reranker_base(MISSING, str(tiny_model))
    assert base.fallback_used and base.fresh_head and base.path == str(tiny_model.resolve())
    assert (
        MISSING in base.note and str(tiny_model) in base.note and "fresh, untrained scoring head" in base.note
    )
    assert "HF_HUB_OFFLINE" in base.note  # says why the hub was not tried
    with pytest.raises(ModelNotFoundError, match=r"reranker base: model .*no-such-reranker.*fallback: model"):
        resolve_reranker_base(MISSING, "sentence-transformers/also-missing")
    with pytest.raises(ModelNotFoundError):
        resolve_reranker_base(MISSING, None)
    own = resolve_reranker_base(str(trained))  # a trained cross-encoder keeps its head
    assert not own.fallback_used and not own.fresh_head and own.note is None


# ---------------------------------------------------------------- training


def test_train_tiny_cross_encoder_writes_complete_directory(
    tiny_model: Path, train_file: Path, trained: Path
) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder

    for name in ("model.safetensors", "config.json", "config_sentence_transformers.json", "README.md"):
        assert (trained / name).exists(), name
    assert (trained / "tokenizer.json").exists() or (trained / "vocab.txt").exists()
    assert not list(trained.glob("*.bin")), "weights must be safetensors only"
    assert not list(trained.parent.glob(".*.tmp")), "staging directory left behind"
    meta = json.loads((trained / "training_metadata.json").read_text())
    for key in (
        "kind", "created", "inputs", "config", "seed", "versions", "base_model", "base_model_path",
        "training_examples", "loss_history", "train_time_s", "wall_time_s", "peak_memory_mb", "device",
    ):  # fmt: skip
        assert key in meta, key
    assert meta["kind"] == "reranker" and meta["reranker_kind"] == "cross-encoder" and meta["fresh_head"]
    assert meta["config"]["loss"] == "bce" and meta["seed"] == 3 and meta["training_examples"] == 6
    assert len(meta["loss_history"]) == 2 * 3  # 18 pairs, 6 per step, 2 epochs
    assert meta["inputs"]["training_data"]["path"] == str(train_file)
    # ragd's CrossEncoderReranker: CrossEncoder(model_name=path, device=...).predict(pairs, ...)
    model = CrossEncoder(model_name=str(trained), device="cpu")
    pairs = [(QUERIES["d3"], DOCS["d3"]), (QUERIES["d3"], DOCS["d6"])]
    scores = model.predict(pairs, batch_size=32, show_progress_bar=False)
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1)), (
        "sigmoid scores pass ragd's min_score 0"
    )
    fresh = CrossEncoder(str(tiny_model), num_labels=1, device="cpu")
    assert not np.allclose(fresh.predict(pairs), scores), "training did not change the weights"
    with pytest.raises(RagdTrainError, match="already exists"):
        train_reranker(train_file, trained, _cfg(tiny_model))


def test_colbert_option_trains(tiny_model: Path, train_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "colbert-reranker"
    meta = train_reranker(train_file, out, _cfg(tiny_model, epochs=1, kind="colbert"))
    assert meta["loss"] == "mnrl" and meta["reranker_kind"] == "colbert" and meta["loss_history"]
    reranker = FineTunedReranker(out)
    assert reranker.kind == "colbert"
    ranked = reranker.rerank(QUERIES["d2"], [DOCS["d1"], DOCS["d2"], DOCS["d3"]], top_k=2)
    assert len(ranked) == 2 and ranked[0]["score"] >= ranked[1]["score"]
    assert "cannot load it" in ragd_reranker_hint(out)


def test_failed_training_leaves_nothing(tiny_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "models" / "x-reranker"
    with pytest.raises(InputError, match="no training records"):
        train_reranker(empty, out, _cfg(tiny_model))
    good = tmp_path / "t.jsonl"
    write_jsonl(good, _records())
    with pytest.raises(ModelNotFoundError):
        train_reranker(good, out, _cfg(tiny_model, base_model=MISSING, fallback_model="nope/nope"))
    assert not out.exists() and not list(out.parent.glob(".*"))


# ---------------------------------------------------------------- ragd's Reranker protocol


@dataclasses.dataclass
class HybridResult:  # the shape of ragd's HybridSearchResult
    content: str
    combined_score: float
    chunk_id: str


@dataclasses.dataclass(frozen=True)
class FrozenResult:
    text: str
    score: float


def test_finetuned_reranker_satisfies_ragd_protocol(trained: Path) -> None:
    from sentence_transformers.cross_encoder import CrossEncoder

    reranker = FineTunedReranker(trained, top_k=3)
    query = QUERIES["d5"]
    texts = list(DOCS.values())
    expected = CrossEncoder(str(trained)).predict([(query, t) for t in texts])
    order = list(np.argsort(-expected, kind="stable"))

    dicts = [{"content": t, "score": 0.1 * i, "id": i} for i, t in enumerate(texts)]
    out = reranker.rerank(query, dicts)  # top_k from the reranker's own default
    assert [r["id"] for r in out] == order[:3]
    assert np.allclose([r["score"] for r in out], expected[order[:3]], atol=1e-5)
    assert out[0]["original_score"] == dicts[order[0]]["score"] and dicts[0]["score"] == 0.0, (
        "input untouched"
    )

    hybrid = [HybridResult(t, 0.5, f"c{i}") for i, t in enumerate(texts)]
    out = reranker.rerank(query, hybrid, top_k=2)
    assert [r.chunk_id for r in out] == [f"c{i}" for i in order[:2]]
    assert out[0].combined_score == pytest.approx(float(expected[order[0]]), abs=1e-5)
    assert out[0].rerank_score == out[0].combined_score and hybrid[order[0]].combined_score == 0.5

    frozen = [FrozenResult(t, 0.0) for t in texts]
    assert [r.text for r in reranker.rerank(query, frozen, top_k=6)] == [texts[i] for i in order]
    plain = [SimpleNamespace(text=t, score=0.0) for t in texts]
    assert reranker.rerank(query, plain, top_k=1)[0].text == texts[order[0]]
    assert reranker.rerank(query, [], top_k=5) == []
    assert [r["id"] for r in rerank(query, dicts, 2, model=trained)] == order[:2]
    assert reranker.model_name == f"finetuned:{trained.resolve()}"
    with pytest.raises(FileNotFoundError):
        FineTunedReranker(trained.parent)


def test_with_score_keeps_other_fields() -> None:
    assert with_score("raw text", 0.7) == {"content": "raw text", "score": 0.7, "rerank_score": 0.7}
    assert with_score({"text": "t"}, 0.2) == {"text": "t", "score": 0.2, "rerank_score": 0.2}


# ---------------------------------------------------------------- evaluation


def test_evaluation_report_has_every_combination(tiny_model: Path, trained: Path, tmp_path: Path) -> None:
    test = tmp_path / "test.jsonl"
    write_jsonl(test, _records())
    report = evaluate_rerankers(
        trained,
        tiny_model,
        str(tiny_model),
        MISSING,
        test,
        None,
        reranker_fallback=str(tiny_model),
        candidates=4,
        max_length=64,
        bootstrap_samples=200,
    )
    combos = {(c["retriever"], c["reranker"]) for c in report["combinations"]}
    assert combos == {(r, x) for r in ("base", "finetuned") for x in ("none", "base", "finetuned")}
    for c in report["combinations"]:
        for metric in ("ndcg@10", "mrr@10"):
            m = c["metrics"][metric]
            assert m["ci_low"] <= m["mean"] <= m["ci_high"]
            if c["reranker"] == "none":
                assert m["delta"] == 0.0
    assert (
        report["candidates"] == 4
        and report["queries"] == 6
        and set(report["recall@4"]) == {"base", "finetuned"}
    )
    assert report["headline"]["retriever"] == "finetuned" and report["verdict"] in (
        "improves",
        "does not improve",
    )
    assert "head is untrained" in report["reranker_notes"]["base"]
    md = markdown_reranker_report(report)
    assert "| fine-tuned | fine-tuned |" in md and "| base | none |" in md and "recall@4 of" in md
    # Natural questions (a hit per document) join the synthetic queries and take the headline.
    questions = tmp_path / "questions.jsonl"
    docs = sorted({r["source_document"] for r in _records()})
    write_jsonl(questions, [{"query_id": "n1", "query": _records()[0]["query"], "documents": docs[:1]}])
    both = evaluate_rerankers(
        trained,
        tiny_model,
        str(tiny_model),
        MISSING,
        test,
        None,
        reranker_fallback=str(tiny_model),
        candidates=4,
        max_length=64,
        bootstrap_samples=200,
        questions_path=questions,
    )
    assert {c["test_set"] for c in both["combinations"]} == {"questions", "synthetic"}
    assert both["headline"]["test_set"] == "questions" and "natural questions" in reranker_message(both)
    assert both["kind"] == "reranker" and both["summary"] == reranker_message(both)
    assert both["improved"] == (both["verdict"] == "improves")
    synthetic = [c for c in both["combinations"] if c["test_set"] == "synthetic"]
    assert [c["metrics"] for c in synthetic] == [c["metrics"] for c in report["combinations"]]


# ---------------------------------------------------------------- the CLI


def _ragd(*args: str | Path) -> Any:
    from click.testing import CliRunner

    from ragd_train.cli import main

    return CliRunner().invoke(main, ["train", "reranker", *map(str, args)], catch_exceptions=False)


def test_cli_maps_options_onto_the_workflow_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ragd_train import runner

    calls: list[tuple[list[str], dict[str, Any]]] = []
    monkeypatch.setattr(runner, "run_targets", lambda t, ws, **kw: calls.append((list(t), kw)))
    result = _ragd(
        "--corpus", "demo", "--workspace", tmp_path, "--loss", "lambda", "--negatives", 2, "--seed", 5, "-n"
    )
    assert result.exit_code == 0, result.output
    (targets, kwargs) = calls[0]
    assert targets == ["models/demo-reranker"] and kwargs["dry_run"]
    assert kwargs["overrides"] == {"reranker": {"loss": "lambda", "negatives_per_query": 2}, "seed": 5}


def test_cli_trains_listwise_from_a_file(tiny_model: Path, train_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-reranker"
    result = _ragd(
        "--data", train_file, "--output", out, "--base-model", tiny_model, "--kind", "cross-encoder",
        "--loss", "lambda", "--epochs", 1, "--max-length", 64, "--negatives", 2, "--seed", 9,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "ragd 1.0.10 never calls a reranker" in said and "retrieval." not in said.replace(
        "`retrieval.rerank` is read nowhere", ""
    )
    meta = json.loads((out / "training_metadata.json").read_text())
    assert meta["seed"] == 9 and meta["loss"] == "lambda" and meta["config"]["max_length"] == 64
    # 16 pairs a step = 5 lists of 1 positive + 2 negatives: 6 lists take 2 steps
    assert meta["training_rows"] == 6 and len(meta["loss_history"]) == 2
    ranked = FineTunedReranker(out).rerank(QUERIES["d2"], [DOCS["d1"], DOCS["d2"], DOCS["d3"]], top_k=2)
    assert len(ranked) == 2 and ranked[0]["score"] >= ranked[1]["score"]
    assert "cannot load it" not in ragd_reranker_hint(out)


# ---------------------------------------------------------------- the workflow target


def _snakemake(ws: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ws),
        "--cores", "2", "--configfile", str(ROOT / "config" / "config.yaml"), str(cfg), *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ}, check=False)


@pytest.mark.slow
def test_demo_reranker_target_builds_and_is_incremental(tiny_model: Path, tmp_path: Path) -> None:
    config = {
        "corpora": {"demo": {"limit": 4}},
        "generate": {"queries_per_chunk": 1},
        "embeddings": {"base_model": str(tiny_model), "epochs": 1, "matryoshka_dims": "none"},
        "mining": {"model": str(tiny_model)},
        "evaluation": {"bootstrap_samples": 200},
        "reranker": {
            "base_model": MISSING,  # not offline: exercises the fallback inside the rule
            "fallback_model": str(tiny_model),
            "epochs": 1,
            "batch_size": 16,
            "max_length": 64,
            "negatives_per_query": 1,
        },
    }
    cfg = tmp_path / "test.yaml"
    cfg.write_text(yaml.safe_dump(config))
    ws = tmp_path / "ws"
    first = _snakemake(ws, cfg, "--", "models/demo-reranker")
    assert first.returncode == 0, first.stderr[-3000:]
    model_dir = ws / "models" / "demo-reranker"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "README.md").exists()
    reranker = FineTunedReranker(model_dir)  # kind auto without the offline cross-encoder: ColBERT
    assert reranker.kind == "colbert" and len(reranker.score("backup schedule", ["Backups run nightly"])) == 1
    meta = json.loads((model_dir / "training_metadata.json").read_text())
    assert meta["base_model_fallback"] and meta["inputs"]["snapshot"]["path"].endswith("snapshots/demo.jsonl")
    assert meta["reranker_kind"] == "colbert" and meta["config"]["kind"] == "colbert" and meta["kind_choice"]
    log = (ws / "logs" / "train_reranker" / "demo.log").read_text()
    assert "step 1/" in log and "reranker.kind auto" in log
    assert "cannot load it" in ragd_reranker_hint(model_dir) and "cannot load it" in first.stdout
    assert (ws / "benchmarks" / "train_reranker" / "demo.tsv").exists()
    assert not list((ws / "models").glob(".*.tmp"))
    second = _snakemake(ws, cfg, "--", "models/demo-reranker")
    assert second.returncode == 0 and "Nothing to be done" in second.stdout + second.stderr

    report_run = _snakemake(ws, cfg, "--", "reports/demo-reranker.json")  # + the embedding model
    assert report_run.returncode == 0, report_run.stderr[-3000:]
    report = json.loads((ws / "reports" / "demo-reranker.json").read_text())
    assert report["headline"]["retriever"] == "finetuned" and report["verdict"] in (
        "improves",
        "does not improve",
    )
    assert {(c["retriever"], c["reranker"]) for c in report["combinations"]} >= {
        ("finetuned", "none"),
        ("finetuned", "finetuned"),
        ("base", "finetuned"),
    }
    assert "| fine-tuned | fine-tuned |" in (ws / "reports" / "demo-reranker.md").read_text()


def test_finetuned_reranker_reorders_ragds_own_result_objects(trained: Path) -> None:
    """ragd's own HybridSearchResult (what hybrid_search returns) and SearchResult (what `ragd
    search` prints) come back reordered, with the new score in the field ragd reads."""
    try:
        from ragd.search import SearchResult
        from ragd.search.hybrid import HybridSearchResult
    except ImportError:
        if os.environ.get("RAGD_TRAIN_REQUIRE_RAGD") == "1":
            raise
        pytest.skip("ragd is not installed")
    from sentence_transformers.cross_encoder import CrossEncoder

    query, texts = QUERIES["d5"], list(DOCS.values())
    expected = CrossEncoder(str(trained)).predict([(query, t) for t in texts])
    order = [int(i) for i in np.argsort(-expected, kind="stable")]
    hybrid = [
        HybridSearchResult(
            content=t, combined_score=0.5, semantic_score=0.5, keyword_score=None, semantic_rank=i + 1,
            keyword_rank=None, rrf_score=0.01, document_id=f"d{i}", document_name=f"d{i}.md",
            chunk_id=f"d{i}_chunk_0", chunk_index=0,
        )
        for i, t in enumerate(texts)
    ]  # fmt: skip
    out = FineTunedReranker(trained).rerank(query, hybrid, top_k=3)
    assert [r.chunk_id for r in out] == [f"d{i}_chunk_0" for i in order[:3]]
    assert out[0].combined_score == pytest.approx(float(expected[order[0]]), abs=1e-5)
    assert all(isinstance(r, HybridSearchResult) for r in out) and hybrid[0].combined_score == 0.5
    legacy = [SearchResult(content=t, score=0.5, document_id=f"d{i}", document_name=f"d{i}.md", chunk_index=0)
              for i, t in enumerate(texts)]  # fmt: skip
    out = FineTunedReranker(trained).rerank(query, legacy, top_k=2)
    assert [r.document_id for r in out] == [f"d{i}" for i in order[:2]]
    assert out[0].score == pytest.approx(float(expected[order[0]]), abs=1e-5)
