"""What a training record must hold to be trained on: one policy for every trainer.

A record whose query or positive is empty (or only whitespace) is dropped, and so is a negative
that equals its record's positive (it would teach the model to push the answer away). Both are
counted and reported in one warning line per file; a file left with nothing to train on is an
error naming it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ragd_train.errors import InputError

log = logging.getLogger("ragd_train")


class Screen:
    """Counts what one file's records lose to the policy; ``report`` warns once."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.dropped: Counter[str] = Counter()

    def usable(self, record: dict[str, Any]) -> bool:
        for field in ("query", "positive"):
            if not str(record.get(field) or "").strip():
                self.dropped[f"records with an empty {field}"] += 1
                return False
        return True

    def negatives(self, texts: Iterable[str], positive: str) -> list[str]:
        texts = list(texts)
        kept = [t for t in texts if t.strip() != positive.strip()]
        if len(kept) < len(texts):
            self.dropped["negatives equal to their positive"] += len(texts) - len(kept)
        return kept

    def report(self, kept: int) -> None:
        if not kept:
            raise InputError(f"no usable training records ({self._summary() or 'none'})", path=self.path)
        if self.dropped:
            log.warning("%s: dropped %s; trained on %d records", self.path, self._summary(), kept)

    def _summary(self) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(self.dropped.items()) if n)
