"""The workspace (Snakemake's working directory) and running workflow targets in it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragd_train.config import workflow_dir
from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import write_json


def ragd_home() -> Path:
    """ragd's data directory: ``$RAGD_HOME`` or ``~/.ragd``."""
    return Path(os.environ.get("RAGD_HOME", "~/.ragd")).expanduser()


def write_overrides(workspace: Path, overrides: dict[str, Any]) -> Path:
    """Write command-line overrides as a config file (typed values, unlike ``--config k=v``)."""
    blob = json.dumps(overrides, sort_keys=True)
    path = workspace / ".ragd-train" / f"overrides-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.json"
    write_json(path, overrides)
    return path


def snakemake_command(
    targets: Sequence[str],
    workspace: Path,
    *,
    configfiles: Sequence[str | Path] = (),
    overrides: dict[str, Any] | None = None,
    cores: int | None = None,
    jobs: int | None = None,
    profile: str | None = None,
    dry_run: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``snakemake`` command line that builds ``targets`` in ``workspace``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(workflow_dir() / "Snakefile")]
    cmd += ["--directory", str(workspace)]
    if profile:
        profile_path = Path(profile).expanduser()
        if profile_path.exists():
            profile_path = profile_path.resolve()
        elif (workflow_dir() / "profiles" / profile).is_dir():
            profile_path = workflow_dir() / "profiles" / profile
        cmd += ["--profile", str(profile_path)]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    if cores is not None or (jobs is None and not profile):
        cmd += ["--cores", str(cores or os.cpu_count() or 1)]
    files = [str(Path(f).resolve()) for f in configfiles]
    if overrides:
        files.append(str(write_overrides(workspace, overrides)))
    if files:
        cmd += ["--configfile", str(workflow_dir() / "config" / "config.yaml"), *files]
    if dry_run:
        cmd.append("--dry-run")
    cmd += list(extra)
    cmd += ["--", *targets]
    return cmd


def run_targets(targets: Sequence[str], workspace: Path, **kwargs: Any) -> None:
    """Run Snakemake for ``targets``; raise a one-line error when it fails."""
    workspace.mkdir(parents=True, exist_ok=True)
    cmd = snakemake_command(targets, workspace, **kwargs)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(cmd, cwd=workspace, env=env, check=False)
    if result.returncode != 0:
        raise RagdTrainError(
            f"snakemake failed (exit {result.returncode}) building {' '.join(targets)}; "
            f"see the rule logs under {workspace / 'logs'}"
        )
