"""Model directories appear whole or not at all: built in a hidden staging directory, then renamed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError


def ensure_absent(output_dir: Path) -> None:
    """Refuse to overwrite a model (checked before any expensive work starts)."""
    if output_dir.exists():
        raise RagdTrainError(f"{output_dir} already exists; delete it first (ragd train delete)")


@contextlib.contextmanager
def staged_output(output_dir: str | Path) -> Iterator[Path]:
    """Yield ``.{name}.pid<pid>@<host>.*.tmp`` beside ``output_dir``; rename it onto ``output_dir`` at end.

    Any exception (a failed step, Ctrl-C, and SIGTERM, which is turned into ``SystemExit`` while
    the block runs) removes the staging directory. A SIGKILL leaves it behind: the next workflow
    run (any target) or the next staging of the same target removes it once its owner is gone.
    """
    output_dir = Path(output_dir)
    ensure_absent(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_dir.parent, name=output_dir.name)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}.{owner_tag()}.", suffix=".tmp", dir=output_dir.parent)
    )
    try:
        with _sigterm_exits():
            yield staging
            _open_up(staging)
            try:
                staging.rename(output_dir)
            except OSError:
                if not output_dir.is_dir() or output_dir.is_symlink():
                    raise
                # Snakemake's lock is check-then-write: two runs started together may both
                # build. This model finished last: it replaces the other (never both lost).
                _replace(output_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(output_dir: Path, staging: Path) -> None:
    """Put ``staging`` in place of the model another run wrote meanwhile. The other model is
    moved aside as a backup first, so a kill between the two renames leaves it to be restored
    (``recover_orphaned_backups``), never neither."""
    import logging

    aside = output_dir.parent / f".{output_dir.name}.{owner_tag()}.replaced.previous"
    shutil.rmtree(aside, ignore_errors=True)
    output_dir.rename(aside)
    try:
        staging.rename(output_dir)
    except BaseException:
        aside.rename(output_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    logging.getLogger("ragd_train").warning(
        "%s was written by another run while this one trained; replaced it with this run's "
        "model, which finished later",
        output_dir,
    )


# ------------------------------------------------------------------ owners of hidden directories

_OWNED = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]*)\.(?P<rest>.+)$")


def owner_tag() -> str:
    """``pid<pid>@<host>``: who made a staging or backup directory (host names made filename-safe)."""
    return f"pid{os.getpid()}@{_host()}"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]


def _owner_gone(pid: int, host: str) -> bool:
    """True when the owning process has exited. Another host's process cannot be checked: kept."""
    if host != _host():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _owned(folder: Path, suffix: str) -> tuple[str, int, str] | None:
    """``(name, pid, host)`` of a ``.{name}.pid<pid>@<host>.<...>{suffix}`` directory, else None."""
    match = _OWNED.match(folder.name)
    if match is None or not folder.name.endswith(suffix):
        return None
    return match["name"], int(match["pid"]), match["host"]


def remove_stale_staging(models_dir: str | Path, name: str | None = None) -> list[Path]:
    """Remove staging directories (``.*.tmp``) in ``models_dir`` whose process is gone; return them.

    A directory without an owner in its name (made before owners were recorded) counts as stale
    only when ``name`` says which target is being staged now.
    """
    removed = []
    folder = Path(models_dir)
    if not folder.is_dir():
        return removed
    for stale in sorted(folder.glob(".*.tmp")):
        if not stale.is_dir() or stale.is_symlink():
            continue
        owner = _owned(stale, ".tmp")
        if owner is None:
            legacy = name is not None and stale.name.startswith(f".{name}.")
            if not legacy:
                continue
        elif not _owner_gone(owner[1], owner[2]):
            continue
        shutil.rmtree(stale, ignore_errors=True)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` (so cleanup runs) instead of killing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------ the last good model survives


def _backup_name(model_dir: Path, tag: str) -> Path:
    return model_dir.parent / f".{model_dir.name}.{tag}.previous"


def backup_models(model_dirs: Iterable[str | Path]) -> dict[Path, Path]:
    """Hard-link copy every existing model directory a run is about to rebuild; return ``{dir: backup}``.

    Snakemake removes a job's output before the job runs; the copy (hard links: no extra space)
    is what ``finish_backups`` puts back when the rebuild fails.
    """
    backups: dict[Path, Path] = {}
    for item in model_dirs:
        model_dir = Path(item)
        if model_dir.is_symlink() or not (model_dir.is_dir() or model_dir.is_file()):
            continue
        backup = _backup_name(model_dir, owner_tag())
        _remove(backup)
        try:
            if model_dir.is_dir():
                shutil.copytree(model_dir, backup, symlinks=True, copy_function=_link_or_copy)
            else:  # an output file (training data, a report): the same, one hard link
                _link_or_copy(str(model_dir), str(backup))
        except OSError:
            _remove(backup)
            raise
        backups[model_dir] = backup
    return backups


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def finish_backups(backups: dict[Path, Path], success: bool) -> list[Path]:
    """Drop the backups after a run; after a failed one, put back every model the run left missing.

    A restored model is marked out of date (its Snakemake timestamp is set to the epoch), so the
    next run rebuilds it, while whatever uses it (ragd) keeps the last good model meanwhile.
    Returns the restored directories.
    """
    restored = []
    for model_dir, backup in backups.items():
        if not backup.exists():
            continue
        if not success and not model_dir.exists():
            _restore(backup, model_dir)
            restored.append(model_dir)
        else:
            _remove(backup)
    return restored


def _restore(backup: Path, model_dir: Path) -> None:
    backup.rename(model_dir)
    if model_dir.is_dir():
        stamp = model_dir / ".snakemake_timestamp"
        stamp.touch()
        os.utime(stamp, (0, 0))
    else:
        os.utime(model_dir, (0, 0))


def recover_orphaned_backups(models_dir: str | Path) -> list[Path]:
    """Backups of a run that was killed before it could finish them: restore or drop them.

    Returns the model directories restored (those the killed run had left missing).
    """
    restored = []
    folder = Path(models_dir)
    if not folder.is_dir():
        return restored
    for backup in sorted(folder.glob(".*.previous")):
        owner = _owned(backup, ".previous")
        if owner is None or backup.is_symlink() or not _owner_gone(owner[1], owner[2]):
            continue
        model_dir = folder / owner[0]
        if model_dir.exists():
            _remove(backup)
        else:
            _restore(backup, model_dir)
            restored.append(model_dir)
    return restored


def _open_up(folder: Path) -> None:
    """Give ``folder`` and what is in it the modes the umask asks for (mkdtemp makes 0700; a
    library saving through a temp file leaves a file 0600)."""
    from ragd_train.jsonl_io import created_mode

    os.chmod(folder, created_mode(directory=True))
    for item in folder.rglob("*"):
        if item.is_symlink():
            continue
        if item.is_dir():
            os.chmod(item, created_mode(directory=True))
        elif item.is_file():
            os.chmod(item, created_mode())


def save_model_files(model: Any, staging: Path) -> None:
    """Save a sentence-transformers model (safetensors) at the top of ``staging``; drop checkpoints."""
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    model_dir = staging / "model"
    model.save_pretrained(str(model_dir), safe_serialization=True)
    for item in model_dir.iterdir():
        item.rename(staging / item.name)
    model_dir.rmdir()
    from ragd_train.weights import verify_weights

    verify_weights(staging)  # never called ready with non-finite or unloadable weights
