"""The guard against harm: the dev split chooses how much of the fine-tuning is shipped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from ragd_train.embeddings.interpolate import choose_interpolation, dev_set
from ragd_train.hub import resolve_model
from ragd_train.jsonl_io import write_jsonl

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = {
    "tls": "TLS certificates are renewed automatically 30 days before they expire using ACME.",
    "backup": "Backups run nightly at 02:00 and are kept for 30 days in the configured bucket.",
    "mfa": "Two-factor authentication accepts TOTP apps and WebAuthn security keys.",
    "rate": "Each API token may send 600 requests per minute; beyond that the server answers 429.",
    "logs": "Server logs are written to /var/log/nimbus and rotated daily at midnight.",
    "sso": "Single sign-on uses SAML 2.0 with any identity provider that publishes metadata.",
    "dns": "DNS records are managed in the zone editor; changes propagate within five minutes.",
    "quota": "Each workspace stores up to 50 GB; uploads beyond the quota are refused.",
}
QUESTIONS = {
    "tls": "when do certificates renew",
    "backup": "how long are backups retained",
    "mfa": "can I use a hardware security key to log in",
    "rate": "too many requests error limit per minute",
    "logs": "where can I find the log files",
    "sso": "configure SAML identity provider",
    "dns": "how fast do name server changes take effect",
    "quota": "what is the storage limit of a workspace",
}


@pytest.fixture
def dev_data(tmp_path: Path) -> tuple[Path, Path]:
    snapshot, dev = tmp_path / "snap.jsonl", tmp_path / "dev.jsonl"
    write_jsonl(
        snapshot,
        [
            {
                "chunk_id": f"{d}_chunk_0",
                "document_id": d,
                "text": t,
                "content_hash": hashlib.sha256(t.encode()).hexdigest(),
            }
            for d, t in TOPICS.items()
        ],
    )
    write_jsonl(
        dev,
        [
            {"query": q, "positive_id": f"{d}_chunk_0", "source_document": d, "negatives": []}
            for d, q in QUESTIONS.items()
        ],
    )
    return snapshot, dev


def _minilm() -> tuple[str, object]:
    from sentence_transformers import SentenceTransformer

    path = resolve_model(MINILM)
    return path, SentenceTransformer(path, device="cpu", trust_remote_code=False)


def test_a_harmed_model_is_never_shipped(dev_data: tuple[Path, Path]) -> None:
    """Fine-tuning that wrecked the weights (noise as large as the weights themselves): the dev
    split scores the base best, so the base's weights are what the model directory gets."""
    snapshot, dev = dev_data
    path, model = _minilm()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (p.std() if p.numel() > 1 else 0.0) * 3)
    result = choose_interpolation(
        model, path, dev, snapshot, [0.0, 0.5, 1.0], corpus_size=100, precision="fp32", seed=1
    )
    curve = {p["weight"]: p["ndcg@10"] for p in result["curve"]}
    assert curve[0.0] > curve[1.0] and result["weight"] == 0.0
    assert "base" in result["reason"] and result["dev_queries"] == len(QUESTIONS)
    assert all(v.equal(base[k]) for k, v in model.state_dict().items())


def test_ties_go_to_the_base_and_no_dev_keeps_the_model(dev_data: tuple[Path, Path]) -> None:
    snapshot, dev = dev_data
    path, model = _minilm()
    result = choose_interpolation(
        model, path, dev, snapshot, [0.0, 0.5, 1.0], corpus_size=100, precision="fp32", seed=1
    )
    assert len({p["ndcg@10"] for p in result["curve"]}) == 1 and result["weight"] == 0.0
    kept = choose_interpolation(
        model, path, None, snapshot, [0.0, 1.0], corpus_size=10, precision="fp32", seed=1
    )
    assert kept["weight"] == 1.0 and "no dev split" in kept["reason"]
    off = choose_interpolation(model, path, dev, snapshot, [1.0], corpus_size=10, precision="fp32", seed=1)
    assert off["weight"] == 1.0 and off["curve"] == []


def test_dev_corpus_holds_the_dev_documents_and_held_out_passages(
    dev_data: tuple[Path, Path], tmp_path: Path
) -> None:
    from ragd_train.snapshot import load_snapshot

    snapshot, dev = dev_data
    write_jsonl(
        dev,
        [
            {
                "query": "when do certificates renew",
                "positive_id": "tls_chunk_0",
                "source_document": "tls",
                "negatives": [{"id": "dns_chunk_0", "text": TOPICS["dns"]}],
                "heldout_passage": "Renewal happens through ACME.",
            }
        ],
    )
    queries, relevant, texts = dev_set(dev, load_snapshot(snapshot), size=3, seed=0)
    assert queries == ["when do certificates renew"] and len(texts) == 3
    assert texts[0] == "Renewal happens through ACME." and TOPICS["dns"] in texts
    assert relevant == [{0}]
