"""Model directories appear whole or not at all: built in a hidden staging directory, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError


def ensure_absent(output_dir: Path) -> None:
    """Refuse to overwrite a model (checked before any expensive work starts)."""
    if output_dir.exists():
        raise RagdTrainError(f"{output_dir} already exists; delete it first (ragd train delete)")


@contextlib.contextmanager
def staged_output(output_dir: str | Path) -> Iterator[Path]:
    """Yield ``.{name}.*.tmp`` next to ``output_dir``; rename it onto ``output_dir`` when the block ends.

    Any exception (a failed step, Ctrl-C) removes the staging directory; a SIGKILL leaves it behind,
    and the next run of the same target removes it first.
    """
    output_dir = Path(output_dir)
    ensure_absent(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.parent.glob(f".{output_dir.name}.*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    try:
        yield staging
        _open_up(staging)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _open_up(folder: Path) -> None:
    """Give ``folder`` and what is in it the modes the umask asks for (mkdtemp makes 0700)."""
    from ragd_train.jsonl_io import created_mode

    os.chmod(folder, created_mode(directory=True))
    for item in folder.rglob("*"):
        if item.is_dir() and not item.is_symlink():
            os.chmod(item, created_mode(directory=True))


def save_model_files(model: Any, staging: Path) -> None:
    """Save a sentence-transformers model (safetensors) at the top of ``staging``; drop checkpoints."""
    shutil.rmtree(staging / "checkpoints", ignore_errors=True)
    model_dir = staging / "model"
    model.save_pretrained(str(model_dir), safe_serialization=True)
    for item in model_dir.iterdir():
        item.rename(staging / item.name)
    model_dir.rmdir()
