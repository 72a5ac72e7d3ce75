"""Running snakemake from ``ragd train``: signals reach it, and the workspace stays held while it runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# A stand-in for snakemake: says it is ready, and on SIGINT takes a second to clean up.
CHILD = (
    "import signal, sys, time\n"
    "from pathlib import Path\n"
    "log = Path(sys.argv[1])\n"
    "def stop(signum, frame):\n"
    "    log.write_text(f'got {signum}\\n')\n"
    "    time.sleep(1)\n"
    "    log.write_text(log.read_text() + 'cleaned up\\n')\n"
    "    sys.exit(130)\n"
    "signal.signal(signal.SIGINT, stop)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
DRIVER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from ragd_train.runner import _run_snakemake\n"
    "cmd = [sys.executable, '-c', sys.argv[1], sys.argv[2]]\n"
    "code, _locked, interrupted = _run_snakemake(cmd, Path(sys.argv[3]))\n"
    "print('exit', code, interrupted, flush=True)\n"
)


def _start(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    log = tmp_path / "child.log"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, CHILD, str(log), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
    return driver, log


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_the_cli_takes_snakemake_down_with_it_and_waits(tmp_path: Path, sig: int) -> None:
    """SIGHUP (the terminal closed) used to kill the CLI and leave snakemake running in its own
    session, without the run lock (#28 item 2): it is forwarded like Ctrl-C, and waited for."""
    driver, log = _start(tmp_path)
    driver.send_signal(sig)
    out, _ = driver.communicate(timeout=30)
    assert log.read_text() == f"got {int(signal.SIGINT)}\ncleaned up\n", "snakemake was not stopped first"
    assert out.strip() == "exit 130 True"


def test_snakemake_is_stopped_when_the_cli_is_killed(tmp_path: Path) -> None:
    """Even SIGKILL of the CLI (nothing to forward) stops snakemake: its parent-death signal."""
    driver, log = _start(tmp_path)
    driver.kill()
    driver.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "cleaned up" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.1)
    assert log.read_text() == f"got {int(signal.SIGINT)}\ncleaned up\n"


def test_unlock_refuses_while_a_run_holds_the_workspace(tmp_path: Path) -> None:
    """`ragd train unlock` used to remove a live run's locks without checking (#28 item 2)."""
    from click.testing import CliRunner

    from ragd_train.cli import main

    ws = tmp_path / "ws"
    locks = ws / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("models/demo-embeddings\n")
    holder = subprocess.Popen(  # a plain snakemake run of the workflow holds it like this
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom ragd_train.runner import hold_workspace\n"
            "lock = hold_workspace(Path(sys.argv[1]))\nprint('held', flush=True)\ntime.sleep(60)\n",
            str(ws),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RAGD_TRAIN_RUN_LOCK_FD"},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(main, ["train", "unlock", "--workspace", str(ws)])
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"Error: the workspace {ws} is locked by another ragd train run (pid {holder.pid}); "
            "wait for it to finish"
        )
        assert (locks / "0.output.lock").exists(), "a live run's lock was removed"
    finally:
        holder.kill()
        holder.wait()


def test_a_run_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    """The lock's holder writes its pid into it: through a link, that overwrote the target."""
    from click.testing import CliRunner

    from ragd_train.cli import main

    ws = tmp_path / "ws"
    (ws / ".ragd-train").mkdir(parents=True)
    precious = tmp_path / "notes.txt"
    precious.write_text("mine\n")
    (ws / ".ragd-train" / "run.lock").symlink_to(precious)
    result = CliRunner().invoke(main, ["train", "unlock", "--workspace", str(ws)])
    assert result.exit_code == 1
    assert (
        result.output == f"Error: cannot use the workspace {ws}: {ws}/.ragd-train/run.lock: it is a symlink\n"
    )
    assert precious.read_text() == "mine\n"
