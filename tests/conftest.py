"""Shared fixtures: offline mode, a tiny locally made sentence-transformers model, the demo corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"


def make_tiny_model(path: Path, dim: int = 32) -> Path:
    """A randomly initialised 2-layer BERT with the MiniLM tokenizer, saved as a sentence-transformers dir."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ragd_train.hub import resolve_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=dim * 2,
        max_position_embeddings=256,
    )
    hf_dir = path / "hf"
    BertModel(config).save_pretrained(hf_dir, safe_serialization=True)
    tokenizer.save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=128)
    pooling = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pooling, models.Normalize()], device="cpu")
    out = path / "tiny-st"
    model.save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(hf_dir)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a tiny sentence-transformers model (dimension 32) made locally."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def demo_subset(tmp_path: Path) -> Path:
    """A folder with 8 of the shipped demo documents."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in sorted(DEMO.glob("*.md"))[:8]:
        shutil.copy(doc, folder / doc.name)
    return folder
