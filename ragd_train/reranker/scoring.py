"""Scoring with a fine-tuned reranker: ragd's reranker protocol, cross-encoder or ColBERT."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.hub import model_kind
from ragd_train.reranker.train import resolve_reranker_base

log = logging.getLogger("ragd_train")


class PairScorer:
    """Scores (query, passage) pairs with a CrossEncoder or a ColBERT MultiVectorEncoder."""

    def __init__(
        self,
        model: str | Path | Any,
        *,
        kind: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        max_length: int | None = None,
        fallback: str | None = None,
        seed: int = 42,
    ) -> None:
        self.batch_size = batch_size
        self.note: str | None = None
        self.fresh_head = False
        self.path: str | None = None
        if not isinstance(model, (str, Path)):
            self.model = model
            self.kind = "colbert" if type(model).__name__ == "MultiVectorEncoder" else "cross-encoder"
            self.name = type(model).__name__
            return
        import torch

        base = resolve_reranker_base(str(model), fallback)
        self.note = base.note
        self.fresh_head = base.fresh_head
        self.path = base.path
        self.name = str(model)
        self.kind = kind or model_kind(base.path)
        torch.manual_seed(seed)  # an untrained head is at least the same one every run
        if self.kind == "colbert":
            from sentence_transformers import MultiVectorEncoder

            self.model = MultiVectorEncoder(base.path, device=device, trust_remote_code=False)
            if max_length:
                self.model.max_seq_length = max_length
        else:
            from sentence_transformers.cross_encoder import CrossEncoder

            kwargs: dict[str, Any] = {"max_length": max_length} if max_length else {}
            if base.fresh_head:
                kwargs["num_labels"] = 1
            self.model = CrossEncoder(base.path, device=device, trust_remote_code=False, **kwargs)

    def score(self, queries: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Scores of each query's candidate texts, one array per query (higher is more relevant)."""
        if self.kind == "colbert":
            return self._score_colbert(queries, candidates)
        pairs = [(q, text) for q, texts in zip(queries, candidates, strict=True) for text in texts]
        flat = np.zeros(len(pairs), dtype=np.float32)
        block = max(self.batch_size * 8, 1)
        start_time = last = time.monotonic()
        for start in range(0, len(pairs), block):
            chunk = pairs[start : start + block]
            flat[start : start + len(chunk)] = self.model.predict(
                chunk, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            ).reshape(-1)
            now = time.monotonic()
            if now - last >= 10 or start + block >= len(pairs) > block:
                last = now
                done = min(start + block, len(pairs))
                rate = done / max(now - start_time, 1e-9)
                log.info("reranking: %d/%d pairs (%.1f/s)", done, len(pairs), rate)
        out, pos = [], 0
        for texts in candidates:
            out.append(flat[pos : pos + len(texts)])
            pos += len(texts)
        return out

    def _score_colbert(self, queries: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        unique = list(dict.fromkeys(t for texts in candidates for t in texts))
        index = {t: i for i, t in enumerate(unique)}
        log.info("late interaction: encoding %d passages and %d queries", len(unique), len(queries))
        docs = self.model.encode_document(unique, batch_size=self.batch_size) if unique else []
        qs = self.model.encode_query(list(queries), batch_size=self.batch_size) if queries else []
        out = []
        for q, texts in zip(qs, candidates, strict=True):
            if not texts:
                out.append(np.zeros(0, dtype=np.float32))
                continue
            sims = self.model.similarity([q], [docs[index[t]] for t in texts])
            out.append(np.asarray(sims.float().cpu().numpy()).reshape(-1))
        return out


def _text_of(result: Any) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, dict):
        for key in ("content", "text", "page_content"):
            if isinstance(result.get(key), str):
                return result[key]
        return ""
    for key in ("content", "text", "page_content"):
        value = getattr(result, key, None)
        if isinstance(value, str):
            return value
    return str(result)


def _score_key(result: Any) -> str:
    keys = result.keys() if isinstance(result, dict) else dir(result)
    return "score" if "score" in keys or "combined_score" not in keys else "combined_score"


def with_score(result: Any, score: float) -> Any:
    """A copy of ``result`` carrying the reranker's ``score`` (``combined_score`` for ragd's hybrid results).

    The original score, when there was one, is kept as ``original_score``; the caller's object is
    not changed.
    """
    if isinstance(result, str):
        return {"content": result, "score": score, "rerank_score": score}
    key = _score_key(result)
    if isinstance(result, dict):
        out = dict(result)
        if key in out:
            out.setdefault("original_score", out[key])
        out[key] = score
        out["rerank_score"] = score
        return out
    old = getattr(result, key, None)
    try:
        out = copy.copy(result)
        setattr(out, key, score)
    except (AttributeError, TypeError, dataclasses.FrozenInstanceError):
        if dataclasses.is_dataclass(result):
            return dataclasses.replace(result, **{key: score})
        if hasattr(result, "_replace"):  # a namedtuple
            return result._replace(**{key: score})
        raise TypeError(f"cannot set a score on {type(result).__name__}") from None
    for name, value in (("rerank_score", score), ("original_score", old)):
        with contextlib.suppress(AttributeError, TypeError):
            setattr(out, name, value)
    return out


class FineTunedReranker:
    """ragd's ``Reranker`` protocol: ``rerank(query, results, top_k=None) -> list``, best first."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: str | None = None,
        batch_size: int = 32,
        top_k: int = 10,
        min_score: float | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(f"{self.path} is not a reranker model directory")
        self.top_k = top_k
        self.min_score = min_score
        self._scorer = PairScorer(self.path, device=device, batch_size=batch_size)

    @property
    def kind(self) -> str:
        return self._scorer.kind

    @property
    def model_name(self) -> str:
        return f"finetuned:{self.path}"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(s) for s in self._scorer.score([query], [list(texts)])[0]]

    def rerank(self, query: str, results: Sequence[Any], top_k: int | None = None) -> list[Any]:
        """``results`` reordered by the model's score (stable for ties), each carrying that score."""
        if not results:
            return []
        scores = self.score(query, [_text_of(r) for r in results])
        order = sorted(range(len(results)), key=lambda i: -scores[i])
        ranked = [with_score(results[i], scores[i]) for i in order if self._keep(scores[i])]
        k = self.top_k if top_k is None else top_k
        return ranked[:k] if k else ranked

    def _keep(self, score: float) -> bool:
        return self.min_score is None or score >= self.min_score


_RERANKERS: dict[str, FineTunedReranker] = {}


def rerank(query: str, results: Sequence[Any], top_k: int | None = 10, *, model: str | Path) -> list[Any]:
    """Module-level convenience: rerank ``results`` with the model at ``model`` (loaded once)."""
    key = str(Path(model).resolve())
    if key not in _RERANKERS:
        _RERANKERS[key] = FineTunedReranker(key)
    return _RERANKERS[key].rerank(query, results, top_k)
