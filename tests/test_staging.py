"""Model directories appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragd_train.errors import RagdTrainError
from ragd_train.staging import staged_output


def test_the_target_appears_only_when_the_block_completes(tmp_path: Path) -> None:
    out = tmp_path / "models" / "demo-embeddings"
    stale = tmp_path / "models" / ".demo-embeddings.killed.tmp"
    stale.mkdir(parents=True)  # a SIGKILLed run's leftovers
    with staged_output(out) as staging:
        assert not stale.exists() and staging.parent == out.parent and staging.name.startswith(".demo-")
        (staging / "model.safetensors").write_bytes(b"x")
        assert not out.exists()
    assert (out / "model.safetensors").read_bytes() == b"x" and list(out.parent.iterdir()) == [out]

    with pytest.raises(RagdTrainError, match="already exists; delete it first"), staged_output(out):
        pass


def test_a_failure_or_interrupt_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo-reranker"
    for exc in (RuntimeError("training diverged"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), staged_output(out) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise exc
        assert list(tmp_path.iterdir()) == []
