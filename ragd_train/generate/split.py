"""Which documents train, which choose the model (dev) and which test it: decided per document,
before any query is generated or filtered, so that no retriever chooses the held-out side.

A document's side comes from the hash of (seed, its content key), so adding or deleting documents
never moves the others. Documents with the same content (the same chunk texts under different
names) share one key and therefore one side: a copy can never put a test query's answer into
training.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

SIDES = ("train", "dev", "test")


def draw(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from the seed and a document key."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12


def content_keys(chunks: list[dict[str, Any]]) -> dict[str, str]:
    """Document id -> split key: the smallest id among the documents with identical content."""
    texts: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks:
        texts[chunk["document_id"]].append(chunk["content_hash"])
    by_content: dict[str, str] = {}
    keys: dict[str, str] = {}
    for doc in sorted(texts):
        digest = hashlib.sha256("\n".join(sorted(texts[doc])).encode()).hexdigest()
        keys[doc] = by_content.setdefault(digest, doc)
    return keys


def assign_documents(
    chunks: list[dict[str, Any]], seed: int, test_ratio: float, dev_ratio: float = 0.0
) -> dict[str, str]:
    """Document id -> ``train``, ``dev`` or ``test``.

    A key goes to test when its draw is below ``test_ratio``, to dev when below ``test_ratio +
    dev_ratio``. With two or more distinct keys there is always a test and a training key (the
    lowest draw goes to test, the highest to train, when the ratios left a side empty); a dev key
    only when there are at least three.
    """
    keys = content_keys(chunks)
    distinct = sorted(set(keys.values()), key=lambda k: draw(seed, k))
    side: dict[str, str] = {}
    for key in distinct:
        d = draw(seed, key)
        side[key] = "test" if d < test_ratio else "dev" if d < test_ratio + dev_ratio else "train"
    if len(distinct) >= 2:
        if "test" not in side.values():
            side[distinct[0]] = "test"
        if "train" not in side.values():
            side[distinct[-1]] = "train"
    if len(distinct) < 2:
        side = dict.fromkeys(distinct, "train")
    return {doc: side[key] for doc, key in keys.items()}


def duplicate_documents(chunks: list[dict[str, Any]]) -> int:
    """How many documents repeat the content of another (they share its side)."""
    keys = content_keys(chunks)
    return sum(1 for doc, key in keys.items() if doc != key)
