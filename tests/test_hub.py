"""Model names resolve offline, through huggingface_hub's own cache lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragd_train.hub import ModelNotFoundError, hf_cache_snapshot, resolve_model


def fake_cache(root: Path, repo: str, current: str, newer: str) -> Path:
    """A hub cache holding two snapshots of ``repo``; refs/main names ``current``, the older one."""
    folder = root / f"models--{repo.replace('/', '--')}"
    for i, revision in enumerate((current, newer)):
        snap = folder / "snapshots" / revision
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
        (snap / "model.safetensors").write_bytes(b"")
        os.utime(snap, (1_000_000 + i, 1_000_000 + i))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(current)
    return folder / "snapshots" / current


def test_the_snapshot_refs_main_names_wins_over_a_newer_one(tmp_path: Path) -> None:
    current = fake_cache(tmp_path, "org/model", "a" * 40, "b" * 40)
    assert hf_cache_snapshot("org/model", cache_dir=tmp_path) == current


def test_resolve_model_uses_the_hub_cache_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as constants

    current = fake_cache(tmp_path, "org/model", "c" * 40, "d" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("org/model") == str(current)
    assert hf_cache_snapshot("org/absent", cache_dir=tmp_path) is None
    assert hf_cache_snapshot("not a repo id!", cache_dir=tmp_path) is None
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE is set"):
        resolve_model("org/absent")
