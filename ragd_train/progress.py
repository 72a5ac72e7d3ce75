"""Progress reporting: a Rich bar on a terminal, plain periodic lines in logs."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from ragd_train.errors import RagdTrainError

T = TypeVar("T")
log = logging.getLogger("ragd_train")


def is_terminal() -> bool:
    return sys.stderr.isatty()


def track(
    items: Iterable[T], description: str, total: int | None = None, every_s: float = 10.0
) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (terminal) or a log line every ``every_s`` seconds."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if is_terminal():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=False)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            of = f"/{total}" if total else ""
            log.info("%s: %d%s (%.1f/s)", description, done, of, done / max(now - start, 1e-9))
    log.info("%s: %d done in %.1fs", description, done, time.monotonic() - start)


def setup_logging(level: int = logging.INFO) -> None:
    """Log ragd_train messages to stderr with timestamps (Snakemake captures them in the rule log)."""
    logger = logging.getLogger("ragd_train")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(level)


class StepReporter:
    """A Rich bar with the loss on a terminal, one log line per step otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None
        if is_terminal():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, loss="-")
            self.bar.start()

    def step(self, step: int, epoch: float, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}")
        else:
            log.info("step %d/%d epoch %.2f loss %.4f", step, self.total, epoch, loss)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@contextlib.contextmanager
def rule_log(smk: Any) -> Iterator[None]:
    """Send stderr and the package's log lines to the rule's ``log:`` file.

    A ``RagdTrainError`` becomes one line in the log and a clean non-zero exit. Torch computes
    on the ``threads`` the rule was given (not the machine's core count).
    """
    threads = getattr(smk, "threads", None)
    if isinstance(threads, int) and threads > 0:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    log_path = smk.log[0] if len(smk.log) else None
    stream = open(log_path, "w", buffering=1, encoding="utf-8") if log_path else sys.stderr  # noqa: SIM115
    old_stderr = sys.stderr
    sys.stderr = stream
    logger = logging.getLogger("ragd_train")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    setup_logging()
    try:
        yield
    except RagdTrainError as exc:
        logging.getLogger("ragd_train").error("%s", exc)
        print(f"ragd-train error: {exc}", file=old_stderr)
        raise SystemExit(1) from None
    finally:
        sys.stderr = old_stderr
        if log_path:
            stream.close()
