"""Glue between Snakemake rule scripts and the package: logging into the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.progress import setup_logging


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
