"""The workspace (Snakemake's working directory) and running workflow targets in it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ragd_train.config import workflow_dir
from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import write_json


def ragd_home() -> Path:
    """ragd's data directory: ``$RAGD_HOME`` or ``~/.ragd`` (an empty ``$RAGD_HOME`` is unset, not
    the current directory)."""
    return Path(os.environ.get("RAGD_HOME") or "~/.ragd").expanduser()


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
    # A run killed between a job's last write and Snakemake's bookkeeping leaves an output marked
    # incomplete, which Snakemake refuses at the next start; rebuild it instead (the model is
    # backed up first, and put back if the rebuild fails).
    cmd += ["--directory", str(workspace), "--rerun-incomplete"]
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


LOCKED_HINT = "ragd train unlock"
# Seconds snakemake gets after a forwarded Ctrl-C (it cancels its jobs, then removes its locks),
# then after a SIGTERM, before the whole process group is killed.
INTERRUPT_GRACE = (60.0, 10.0)


def run_targets(targets: Sequence[str], workspace: Path, **kwargs: Any) -> None:
    """Run Snakemake for ``targets``; raise a one-line error when it fails.

    Snakemake runs in its own process group. Ctrl-C (or SIGTERM) of this process is forwarded to
    that group as SIGINT, and snakemake is given time to cancel its jobs and remove its locks;
    only if it does not exit is the group (snakemake and the rule scripts it started) killed.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    cmd = snakemake_command(targets, workspace, **kwargs)
    with _workspace_lock(workspace, shared=bool(kwargs.get("dry_run"))) as lock:
        returncode, locked, interrupted = _run_snakemake(cmd, workspace, lock_fd=lock.fileno())
    if returncode == 0:
        return
    if locked:
        raise RagdTrainError(
            f"the workspace {workspace} is locked by another run, or by one that was killed; "
            f"if no other run is using it: {LOCKED_HINT} --workspace {workspace}"
        )
    if interrupted:
        raise RagdTrainError(
            f"interrupted building {' '.join(targets)} (snakemake exit {returncode}); "
            "finished outputs are kept, unfinished ones removed"
        )
    raise RagdTrainError(
        f"snakemake failed (exit {returncode}) building {' '.join(targets)}; "
        f"see the rule logs under {workspace / 'logs'}"
    )


# The run lock's file descriptor, inherited by the snakemake a ``ragd train`` run starts: the
# workflow then knows the workspace is already held (and holds it while it lives).
LOCK_FD_ENV = "RAGD_TRAIN_RUN_LOCK_FD"


def run_lock_path(workspace: Path) -> Path:
    return workspace / ".ragd-train" / "run.lock"


@contextlib.contextmanager
def _workspace_lock(workspace: Path, *, shared: bool = False) -> Iterator[Any]:
    """One ``ragd train`` run at a time per workspace (dry runs may overlap): an flock, taken
    atomically, unlike Snakemake's check-then-write locks, and released by the kernel when the
    last process holding it ends, so it never goes stale. The snakemake a run starts inherits
    the descriptor, so the workspace stays held for as long as snakemake lives, even when this
    process is killed; ``ragd train unlock`` refuses while it is held."""
    import fcntl

    path = run_lock_path(workspace)
    handle = _open_lock(workspace, path)
    with handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RagdTrainError(
                f"the workspace {workspace} is locked by another ragd train run{_holder(path)}; "
                "wait for it to finish"
            ) from None
        if not shared:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        yield handle


def _open_lock(workspace: Path, path: Path) -> Any:
    """The run lock file, opened for update; never through a symlink (its pid is written into
    it), never anything but a regular file."""
    import stat

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        reason = "it is a symlink" if path.is_symlink() else exc.strerror
        raise RagdTrainError(f"cannot use the workspace {workspace}: {path}: {reason}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RagdTrainError(f"cannot use the workspace {workspace}: {path} is not a regular file")
    return os.fdopen(fd, "r+")


def _holder(path: Path) -> str:
    """`` (pid N)`` of the run that last took the lock exclusively, when it is still alive."""
    try:
        pid = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return ""
    if pid <= 0:
        return ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass
    return f" (pid {pid})"


def hold_workspace(workspace: Path) -> Any | None:
    """For a workflow run not started by ``ragd train``: take the run lock for this process's
    life (so ``ragd train unlock`` and ``ragd train`` runs see it); None when already held by
    the ``ragd train`` run that started this one. A one-line error when another run holds it."""
    import fcntl

    if os.environ.get(LOCK_FD_ENV):
        return None
    path = run_lock_path(workspace)
    handle = _open_lock(workspace, path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RagdTrainError(
            f"the workspace {workspace} is in use by a ragd train run{_holder(path)}; wait for it to finish"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def unlock_workspace(workspace: Path, configfiles: Sequence[str | Path] = ()) -> None:
    """``snakemake --unlock`` in ``workspace``: remove the locks a killed run left behind.

    Refused while any run (a ``ragd train`` run, the snakemake it started, or a plain snakemake
    run of this workflow) still holds the workspace's run lock: its locks are not stale.
    """
    with _workspace_lock(workspace) as lock:
        cmd = snakemake_command([], workspace, configfiles=configfiles, cores=1, extra=["--unlock"])
        returncode, _, _ = _run_snakemake(cmd, workspace, lock_fd=lock.fileno())
    if returncode != 0:
        raise RagdTrainError(f"snakemake --unlock failed (exit {returncode}) in {workspace}")


_LOCK_MESSAGES = ("LockException", "Directory cannot be locked")


def _run_snakemake(cmd: list[str], workspace: Path, lock_fd: int | None = None) -> tuple[int, bool, bool]:
    """Run ``cmd`` in a new process group, forwarding Ctrl-C, SIGTERM and SIGHUP to it and
    waiting for it; if this process dies without forwarding (SIGKILL), Linux sends snakemake
    SIGINT (its parent-death signal), so it never runs on unattended.

    Returns ``(returncode, refused by the lock, interrupted)``.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if lock_fd is not None:
        env[LOCK_FD_ENV] = str(lock_fd)
    started = time.time()
    with _Forwarder() as forwarder:
        result = subprocess.run(
            cmd,
            cwd=workspace,
            env=env,
            check=False,
            start_new_session=True,
            pass_fds=(lock_fd,) if lock_fd is not None else (),
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
    returncode = result.returncode
    locked = returncode != 0 and _refused_by_lock(workspace, started)
    return returncode, locked, forwarder.interrupts > 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGINT when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def _refused_by_lock(workspace: Path, since: float) -> bool:
    """Whether the Snakemake log of the run started at ``since`` says the lock refused it."""
    for log in (workspace / ".snakemake" / "log").glob("*.snakemake.log"):
        try:
            if log.stat().st_mtime >= since - 1 and any(
                m in log.read_text(errors="replace") for m in _LOCK_MESSAGES
            ):
                return True
        except OSError:
            continue
    return False


class _Forwarder:
    """While snakemake runs: Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed) of this
    process go to snakemake's group, and this process waits for snakemake to end.

    The first signal sends SIGINT (snakemake cancels its jobs, whose staging directories are
    removed, and removes its locks); if snakemake is still running after the grace periods, or
    on the second and third signal, SIGTERM and then SIGKILL follow, to the whole group, so no
    rule script outlives snakemake and writes its output later.
    """

    def __init__(self) -> None:
        self.interrupts = 0
        self._previous: dict[int, Any] = {}
        self._timers: list[threading.Timer] = []

    def __enter__(self) -> _Forwarder:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for timer in self._timers:
            timer.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.interrupts += 1
        if self.interrupts == 1:
            _signal_children(signal.SIGINT)
            grace_int, grace_term = INTERRUPT_GRACE
            for delay, sig in ((grace_int, signal.SIGTERM), (grace_int + grace_term, signal.SIGKILL)):
                timer = threading.Timer(delay, _signal_children, (sig,))
                timer.daemon = True
                timer.start()
                self._timers.append(timer)
        else:
            _signal_children(signal.SIGTERM if self.interrupts == 2 else signal.SIGKILL)


def _signal_children(sig: int) -> None:
    """Signal the process group of each child of this process (snakemake leads its own group)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.killpg(child.pid, sig)


# ------------------------------------------------------------------ checks before a run touches anything


def check_embedding_config(config: dict[str, Any], sources: list[str] | None = None) -> None:
    """Refuse, in one line naming the field, an embedding config a rebuild would fail on.

    Checked before any job runs (and before Snakemake removes the model it would rebuild): the
    base model must resolve (offline: a local directory, the Hugging Face cache or an offline
    package) and explicit Matryoshka dims must not exceed the model's dimension, read from its
    config files without loading weights.
    """
    from ragd_train.config import locate
    from ragd_train.errors import InputError
    from ragd_train.hub import resolve_model

    def where(field: str) -> dict[str, Any]:
        path, line = locate(config, field.split("."), sources or [])
        return {"path": path, "line": line, "field": field}

    embeddings = config.get("embeddings", {})
    name = embeddings.get("base_model")
    try:
        resolved = resolve_model(str(name))
    except RagdTrainError as exc:
        raise InputError(str(exc), **where("embeddings.base_model")) from None
    dims = embeddings.get("matryoshka_dims")
    if not isinstance(dims, list) or not Path(resolved).is_dir():
        return
    dim = embedding_dimension(Path(resolved))
    too_big = sorted({d for d in dims if isinstance(d, int) and dim is not None and d > dim})
    if too_big:
        raise InputError(
            f"{too_big} exceed the embedding dimension {dim} of {name} (embeddings.base_model)",
            **where("embeddings.matryoshka_dims"),
        )


_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
_SAME_DIM_MODULES = ("Normalize", "Dropout", "LayerNorm", "WordWeights")


def embedding_dimension(model_dir: Path) -> int | None:
    """The output dimension of a sentence-transformers (or plain Hugging Face) model directory,
    read from its JSON config files; None when they do not say."""
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        return _hidden_size(_read_json(model_dir / "config.json"))
    dim: int | None = None
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        folder = model_dir / str(module.get("path", ""))
        cfg = _read_json(folder / "config.json")
        if kind == "Transformer":
            dim = _hidden_size(cfg)
        elif kind == "Pooling" and isinstance(cfg, dict):
            width = cfg.get("word_embedding_dimension", cfg.get("embedding_dimension", dim))
            modes = sum(bool(cfg.get(k)) for k in _POOLING_MODES) or 1
            dim = width * modes if isinstance(width, int) else None
        elif kind == "Dense" and isinstance(cfg, dict):
            dim = cfg.get("out_features") if isinstance(cfg.get("out_features"), int) else None
        elif kind not in _SAME_DIM_MODULES:
            return None
    return dim


def _hidden_size(cfg: Any) -> int | None:
    if not isinstance(cfg, dict):
        return None
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
