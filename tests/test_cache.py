"""A damaged cache entry is reported in one line and computed again, never used nor fatal (#28 item 5)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ragd_train.cache import EmbeddingCache, GenerationCache, cache_stats, prune

TEXTS = ["alpha", "beta", "gamma"]


def fake_encoder(dim: int, calls: list[list[str]]):  # noqa: ANN201
    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.ones((len(texts), dim), dtype=np.float32) / np.sqrt(dim)

    return encode


def test_a_truncated_shard_is_recomputed_and_stats_still_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[list[str]] = []
    EmbeddingCache(tmp_path, "fp").encode(TEXTS, fake_encoder(8, calls))
    (shard,) = (tmp_path / "embeddings" / "fp").glob("*.npz")
    shard.write_bytes(shard.read_bytes()[:100])  # a disk full or a copy cut short
    vectors = EmbeddingCache(tmp_path, "fp").encode(TEXTS, fake_encoder(8, calls))
    assert vectors.shape == (3, 8) and calls == [TEXTS, TEXTS]
    assert f"embedding cache shard {shard} is damaged (unreadable" in caplog.text
    assert cache_stats(tmp_path)["embeddings"]["fp"]["vectors"] == 3

    from ragd_train.cli import main

    shard = sorted((tmp_path / "embeddings" / "fp").glob("*.npz"))[0]
    shard.write_bytes(b"PK\x03\x04 not a zip")
    ws = tmp_path.parent / (tmp_path.name + "-ws")
    (ws).mkdir()
    (ws / "cache").symlink_to(tmp_path)
    result = CliRunner().invoke(main, ["train", "cache", "stats", "--workspace", str(ws)])
    assert result.exit_code == 0, result.output
    assert "embeddings fp: 0 vectors in 0 shards" in result.output  # the damaged one is not counted
    assert shard.exists(), "stats only reads"


def test_a_shard_of_the_wrong_dimension_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[list[str]] = []
    wrong = EmbeddingCache(tmp_path, "fp")
    wrong.encode(TEXTS[:2], fake_encoder(16, calls))  # vectors of another model under this fingerprint
    vectors = EmbeddingCache(tmp_path, "fp", dim=8).encode(TEXTS, fake_encoder(8, calls))
    assert vectors.shape == (3, 8) and calls[-1] == TEXTS
    assert "2 vectors are not of the model's dimension 8" in caplog.text
    # not told the dimension: what the model encodes now wins over what is cached
    calls.clear()
    other = tmp_path / "other"
    EmbeddingCache(other, "fp").encode(TEXTS[:2], fake_encoder(16, calls))
    vectors = EmbeddingCache(other, "fp").encode(TEXTS, fake_encoder(8, calls))
    assert vectors.shape == (3, 8) and calls[1:] == [["gamma"], ["alpha", "beta"]]
    again: list[list[str]] = []
    assert EmbeddingCache(other, "fp", dim=8).encode(TEXTS, fake_encoder(8, again)).shape == (3, 8)
    assert again == []


def test_a_shard_whose_contents_changed_is_caught_by_its_checksum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[list[str]] = []
    EmbeddingCache(tmp_path, "fp").encode(TEXTS, fake_encoder(8, calls))
    (shard,) = (tmp_path / "embeddings" / "fp").glob("*.npz")
    with np.load(shard) as data:
        parts = {k: data[k] for k in data.files}
    parts["vectors"] = parts["vectors"] * 2
    with open(shard, "wb") as handle:
        np.savez(handle, **parts)
    EmbeddingCache(tmp_path, "fp").encode(TEXTS, fake_encoder(8, calls))
    assert calls == [TEXTS, TEXTS] and "checksum mismatch" in caplog.text


def test_a_non_utf8_generation_entry_is_a_miss_and_pruned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = GenerationCache(tmp_path, "generations")
    cache.put("ab" * 32, ["q"], ref="live")
    path = tmp_path / "generations" / "ab" / f"{'ab' * 32}.json"
    path.write_bytes(b'{"ref": "live", "value": ["\xff\xfe"]}')
    with caplog.at_level(logging.WARNING):
        assert cache.get("ab" * 32) is None
    assert f"cache entry {path} is damaged" in caplog.text
    assert prune(tmp_path, {"live"}) == {"generations": 1, "embeddings": 0}
    assert not path.exists()


def test_cache_prune_names_a_damaged_snapshot_in_one_line(tmp_path: Path) -> None:
    from ragd_train.cli import main

    snapshot = tmp_path / "snapshots" / "demo.jsonl"
    snapshot.parent.mkdir()
    for text, reason in [
        (b'{"content_hash": "a"}\n{bad\n', ":2: malformed JSON"),
        (b"\xff\xfe\n", ":1: not valid UTF-8"),
        (b'{"text": "no hash"}\n', ":1: field 'content_hash': missing required field"),
    ]:
        snapshot.write_bytes(text)
        result = CliRunner().invoke(main, ["train", "cache", "prune", "--workspace", str(tmp_path)])
        assert result.exit_code == 1 and result.output.startswith(f"Error: {snapshot}{reason}"), result.output
        assert len(result.output.splitlines()) == 1
