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


def test_outputs_get_the_umasks_modes_not_0600(tmp_path: Path) -> None:
    """Temp files and dirs are made 0600/0700; what is renamed into place gets the umask's modes."""
    import os
    import stat

    from ragd_train.jsonl_io import write_json
    from ragd_train.staging import staged_output

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with staged_output(tmp_path / "model") as staging:
            (staging / "sub").mkdir()
            (staging / "w.safetensors").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "model" / "sub").stat().st_mode) == 0o755


def test_a_model_another_run_wrote_meanwhile_is_replaced_not_both_lost(tmp_path: Path) -> None:
    """Two runs built the same model: the one finishing last replaces the other (before, it
    raised, Snakemake deleted the job's output, and the finished model of the other run was
    thrown away with it: #28 item 2)."""
    out = tmp_path / "models" / "demo-embeddings"
    with staged_output(out) as staging:
        (staging / "model.safetensors").write_bytes(b"mine")
        out.mkdir()  # the other run finished first
        (out / "model.safetensors").write_bytes(b"theirs")
    assert (out / "model.safetensors").read_bytes() == b"mine"
    assert list(out.parent.iterdir()) == [out], "a staging or set-aside directory was left"


def test_model_files_get_the_umasks_modes_even_when_saved_0600(tmp_path: Path) -> None:
    """A library that saves weights through a temp file leaves them 0600 (#28 item 7)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        with staged_output(tmp_path / "model") as staging:
            (staging / "sub").mkdir()
            for name in ("model.safetensors", "sub/config.json"):
                (staging / name).write_bytes(b"x")
                os.chmod(staging / name, 0o600)
    finally:
        os.umask(old)
    for name in ("model.safetensors", "sub/config.json"):
        assert stat.S_IMODE((tmp_path / "model" / name).stat().st_mode) == 0o644, name


def test_output_files_are_backed_up_and_put_back_after_a_failed_run(tmp_path: Path) -> None:
    """Training data and reports, not only model folders (#28 item 5)."""
    import os

    from ragd_train.staging import backup_models, finish_backups, recover_orphaned_backups

    train = tmp_path / "training_data" / "demo" / "train.jsonl"
    train.parent.mkdir(parents=True)
    train.write_text("previous\n")
    backups = backup_models([train])
    train.unlink()  # what Snakemake does to the output of a job it runs, and of one that fails
    assert finish_backups(backups, success=False) == [train]
    assert train.read_text() == "previous\n" and train.stat().st_mtime == 0  # out of date
    assert list(train.parent.iterdir()) == [train]
    # the same after a SIGKILL: the next run restores what the killed one left
    (train.parent / f".train.jsonl.pid{os.getpid() + 10**7}@{_host()}.previous").write_text("kept\n")
    train.unlink()
    assert recover_orphaned_backups(train.parent) == [train] and train.read_text() == "kept\n"


def _host() -> str:
    from ragd_train.staging import _host as host

    return host()
