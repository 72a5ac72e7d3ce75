"""Content-addressed store for generated items (queries, judge verdicts, answers).

Each entry is one small JSON file named by the sha256 of everything that determines it,
written atomically, so concurrent jobs and killed runs never corrupt it and a rerun
serves every finished item from disk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ragd_train.jsonl_io import atomic_open


def cache_key(**parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """A directory of ``<kind>/<key[:2]>/<key>.json`` entries."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.root = Path(root) / kind
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        path = self._path(key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value: Any) -> None:
        with atomic_open(self._path(key)) as handle:
            json.dump(value, handle, ensure_ascii=False)
