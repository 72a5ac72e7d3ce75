"""Fine-tune a reranker on (query, positive, mined negatives), use it as ragd's reranker, evaluate it.

* ``kind: auto`` (default): ``cross-encoder`` when the configured cross-encoder resolves offline,
  otherwise ``colbert`` from the fallback bi-encoder. A cross-encoder whose scoring head starts
  untrained needs far more data than one corpus gives (measured: SciFact NDCG@10 0.645 -> 0.264
  after reranking), while late interaction reuses the bi-encoder's trained token embeddings.
* ``kind: cross-encoder``: a sentence-transformers ``CrossEncoder`` trained with
  ``BinaryCrossEntropyLoss`` on labelled (query, passage) pairs, or listwise with ``LambdaLoss``.
  The saved directory loads in ragd's ``CrossEncoderReranker`` unchanged.
* ``kind: colbert``: a late-interaction (ColBERT) model, sentence-transformers' own
  ``MultiVectorEncoder`` (PyLate-compatible checkpoints) trained with its
  ``MultipleNegativesRankingLoss`` on (query, positive, negatives). Only ``FineTunedReranker`` uses it.

The base model is resolved offline; when the configured cross-encoder is not available, training
starts from ``fallback_model`` (a bi-encoder checkpoint) with a fresh scoring head, and says so.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import atomic_open, read_records, write_json
from ragd_train.metadata import base_metadata, gpu_peak_memory_mb, peak_memory_mb
from ragd_train.staging import ensure_absent, save_model_files, staged_output

log = logging.getLogger("ragd_train")

DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"  # ragd's DEFAULT_RERANKER_MODEL
DEFAULT_FALLBACK = "sentence-transformers/all-MiniLM-L6-v2"
KINDS = ("auto", "cross-encoder", "colbert")
LOSSES = ("bce", "lambda")
KS = {"ndcg": [10], "mrr": [10]}
HEADLINE = "ndcg@10"


@dataclass
class RerankerTrainingConfig:
    """Everything that decides the trained weights."""

    kind: str = "auto"  # auto | cross-encoder | colbert
    base_model: str = DEFAULT_RERANKER
    fallback_model: str = DEFAULT_FALLBACK
    loss: str = "bce"  # bce | lambda (cross-encoder only)
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    negatives: int = 5
    mini_batch_size: int = 16
    budget_minutes: float = 10.0  # 0 = no time limit; the epochs still bound the steps
    max_steps: int | None = None  # a fixed step count; overrides epochs and the budget
    seed: int = 42

    @classmethod
    def from_workflow(cls, config: dict[str, Any]) -> RerankerTrainingConfig:
        r = config.get("reranker") or {}
        d = cls()
        return cls(
            kind=r.get("kind", d.kind),
            base_model=r.get("base_model", d.base_model),
            fallback_model=r.get("fallback_model", d.fallback_model),
            loss=r.get("loss", d.loss),
            epochs=r.get("epochs", d.epochs),
            batch_size=r.get("batch_size", d.batch_size),
            learning_rate=float(r.get("learning_rate", d.learning_rate)),
            warmup_ratio=r.get("warmup_ratio", d.warmup_ratio),
            max_length=r.get("max_length", d.max_length),
            negatives=r.get("negatives_per_query", d.negatives),
            mini_batch_size=r.get("mini_batch_size", d.mini_batch_size),
            budget_minutes=float(r.get("budget_minutes", d.budget_minutes)),
            max_steps=r.get("max_steps", d.max_steps),
            seed=config.get("seed", d.seed),
        )

    def check(self) -> None:
        if self.kind not in KINDS:
            raise InputError(
                f"'{self.kind}' is not one of {list(KINDS)}", path="config", field="reranker.kind"
            )
        if self.loss not in LOSSES:
            raise InputError(
                f"'{self.loss}' is not one of {list(LOSSES)}", path="config", field="reranker.loss"
            )
        if self.negatives < 1:
            raise InputError(
                "a reranker needs at least one negative per query",
                path="config",
                field="reranker.negatives_per_query",
            )


# ---------------------------------------------------------------- base model


@dataclass
class ResolvedBase:
    """Where the starting weights come from."""

    requested: str
    path: str
    fallback_used: bool
    fresh_head: bool
    note: str | None = None


def is_cross_encoder_dir(path: str | Path) -> bool:
    """A directory whose transformer already has a sequence-classification (scoring) head."""
    config = Path(path) / "config.json"
    if not config.exists():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (json.JSONDecodeError, OSError):
        return False
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def resolve_reranker_base(name: str, fallback: str | None = DEFAULT_FALLBACK) -> ResolvedBase:
    """Resolve ``name`` offline; if it is unavailable, fall back to ``fallback`` with a fresh head.

    Raises ``ModelNotFoundError`` naming both when neither resolves.
    """
    from ragd_train.models import ModelNotFoundError, resolve_model

    try:
        path = resolve_model(name)
    except ModelNotFoundError as first:
        if not fallback or fallback == name:
            raise
        try:
            path = resolve_model(fallback)
        except ModelNotFoundError as second:
            raise ModelNotFoundError(f"reranker base: {first}; fallback: {second}") from None
        note = (
            f"reranker base model '{name}' is not available offline ({first}); starting a "
            f"cross-encoder from '{fallback}' ({path}) with a fresh, untrained scoring head "
            "(it needs much more training data than a fine-tune of a trained cross-encoder; "
            "check the reranker report before using it)"
        )
        return ResolvedBase(
            name, path, fallback_used=True, fresh_head=not is_cross_encoder_dir(path), note=note
        )
    local = Path(path).is_dir()
    return ResolvedBase(name, path, fallback_used=False, fresh_head=local and not is_cross_encoder_dir(path))


def choose_kind(cfg: RerankerTrainingConfig) -> tuple[str, str | None]:
    """The kind ``auto`` stands for, and why (``None`` when nothing needs saying)."""
    from ragd_train.models import ModelNotFoundError, resolve_model

    if cfg.kind != "auto":
        return cfg.kind, None
    try:
        path = resolve_model(cfg.base_model)
    except ModelNotFoundError:
        path = None
    if path is not None and (not Path(path).is_dir() or is_cross_encoder_dir(path)):
        return "cross-encoder", None
    return "colbert", (
        f"reranker.kind auto: '{cfg.base_model}' is not a trained cross-encoder available offline, so "
        f"this trains a ColBERT (late-interaction) reranker from '{cfg.fallback_model}': a cross-encoder "
        "with a fresh scoring head made rankings worse in our benchmarks (bench/README.md). Set "
        "reranker.kind: cross-encoder to force one."
    )


# ---------------------------------------------------------------- training data


def load_reranker_examples(path: str | Path, negatives: int, seed: int) -> list[dict[str, Any]]:
    """One row per query: ``query``, ``positive``, ``negatives`` (exactly ``negatives`` texts).

    Mined negatives come first; a record with fewer is topped up (seeded) with negatives and
    positives of records from other documents, so every query has the same list length.
    """
    records = read_records(path, required=("query", "positive"), strings=("query", "positive"))
    if not records:
        raise InputError("no training records", path=path)
    pool: list[tuple[str, str]] = []
    mined: list[list[str]] = []
    docs: list[str] = []
    for index, record in enumerate(records, start=1):
        doc = str(record.get("source_document") or record.get("positive_id") or index)
        docs.append(doc)
        raw = record.get("negatives") or []
        if not isinstance(raw, list):
            raise InputError("expected a list", path=path, line=index, field="negatives")
        texts: list[str] = []
        for neg in raw:
            text = neg.get("text") if isinstance(neg, dict) else neg
            if not isinstance(text, str):
                raise InputError("negative without text", path=path, line=index, field="negatives")
            texts.append(text)
            pool.append((f"neg:{index}", text))
        mined.append(texts)
        pool.append((doc, str(record["positive"])))
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for record, doc, texts in zip(records, docs, mined, strict=True):
        positive = str(record["positive"])
        chosen = [t for t in texts if t != positive][:negatives]
        candidates = [
            text for other, text in pool if other != doc and text != positive and text not in chosen
        ]
        if len(chosen) < negatives and not candidates:
            raise InputError(
                "a reranker needs negatives: the records have none and no other documents", path=path
            )
        while len(chosen) < negatives:
            chosen.append(rng.choice(candidates))
        rows.append({"query": str(record["query"]), "positive": positive, "negatives": chosen})
    return rows


def training_dataset(rows: list[dict[str, Any]], cfg: RerankerTrainingConfig) -> Any:
    """The ``datasets.Dataset`` the chosen loss expects."""
    from datasets import Dataset

    if cfg.kind == "colbert":
        table = [
            {"anchor": r["query"], "positive": r["positive"]}
            | {f"negative_{i}": text for i, text in enumerate(r["negatives"], start=1)}
            for r in rows
        ]
        return Dataset.from_list(table)
    if cfg.loss == "lambda":
        return Dataset.from_list(
            [
                {
                    "query": r["query"],
                    "docs": [r["positive"], *r["negatives"]],
                    "labels": [1.0] + [0.0] * len(r["negatives"]),
                }
                for r in rows
            ]
        )
    pairs = []
    for r in rows:
        pairs.append({"query": r["query"], "passage": r["positive"], "label": 1.0})
        pairs.extend({"query": r["query"], "passage": n, "label": 0.0} for n in r["negatives"])
    return Dataset.from_list(pairs)


def rows_per_batch(cfg: RerankerTrainingConfig) -> int:
    """``batch_size`` counts scored (query, passage) pairs; a listwise row holds 1 + negatives pairs."""
    if cfg.kind == "cross-encoder" and cfg.loss == "lambda":
        return max(1, cfg.batch_size // (1 + cfg.negatives))
    return cfg.batch_size


# ---------------------------------------------------------------- models and losses


def load_base_model(base: ResolvedBase, cfg: RerankerTrainingConfig, device: str | None = None) -> Any:
    """A CrossEncoder (num_labels=1, sigmoid scores) or a MultiVectorEncoder from the resolved base."""
    if cfg.kind == "colbert":
        from sentence_transformers import MultiVectorEncoder

        model = MultiVectorEncoder(base.path, device=device, trust_remote_code=False)
        return model
    import torch
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(
        base.path,
        num_labels=1,
        max_length=cfg.max_length,
        device=device,
        trust_remote_code=False,
        activation_fn=torch.nn.Sigmoid(),
    )
    return model


def build_loss(model: Any, cfg: RerankerTrainingConfig) -> Any:
    import torch

    if cfg.kind == "colbert":
        from sentence_transformers.multi_vector_encoder import losses as mve_losses

        return mve_losses.MultiVectorMultipleNegativesRankingLoss(model)
    from sentence_transformers.cross_encoder import losses

    if cfg.loss == "lambda":
        return losses.LambdaLoss(model, mini_batch_size=cfg.mini_batch_size)
    # As in sentence-transformers' reranker recipe: weigh the one positive against the k negatives.
    return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(cfg.negatives)))


def _trainer_classes(kind: str) -> tuple[Any, Any]:
    if kind == "colbert":
        from sentence_transformers import MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments

        return MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments

    return CrossEncoderTrainer, CrossEncoderTrainingArguments


def train_reranker(
    train_path: str | Path,
    output_dir: str | Path,
    cfg: RerankerTrainingConfig,
    *,
    snapshot_path: str | Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train into a temporary directory next to ``output_dir``; move it into place when complete."""
    import torch
    from transformers import PrinterCallback

    from ragd_train.trainer_setup import TrainingBudget, plan_message, plan_training, trainer_arguments

    start = time.monotonic()
    cfg.check()
    kind, why = choose_kind(cfg)
    if why:
        log.warning("%s", why)
    cfg = dataclasses.replace(cfg, kind=kind)
    output_dir = Path(output_dir)
    ensure_absent(output_dir)
    rows = load_reranker_examples(train_path, cfg.negatives, cfg.seed)
    base = resolve_reranker_base(cfg.base_model, cfg.fallback_model)
    if base.note and not why:
        log.warning("%s", base.note)
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation is seeded too
    model = load_base_model(base, cfg, device)
    if cfg.kind == "colbert":
        model.max_seq_length = cfg.max_length
    dataset = training_dataset(rows, cfg)
    batch_size = min(rows_per_batch(cfg), len(dataset))
    steps_per_epoch = -(-len(dataset) // batch_size)
    history: list[dict[str, float]] = []
    trainer_cls, args_cls = _trainer_classes(cfg.kind)

    with staged_output(output_dir) as staging:
        extra: dict[str, Any] = {}
        if cfg.kind == "colbert":
            from sentence_transformers.base.sampler import BatchSamplers

            extra["batch_sampler"] = BatchSamplers.NO_DUPLICATES
        args = trainer_arguments(
            args_cls,
            staging,
            epochs=cfg.epochs,
            batch_size=batch_size,
            learning_rate=cfg.learning_rate,
            warmup_ratio=cfg.warmup_ratio,
            seed=cfg.seed,
            device=device,
            **extra,
        )
        trainer = trainer_cls(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=build_loss(model, cfg),
        )
        trainer.remove_callback(PrinterCallback)  # our callback logs each step once
        plan = plan_training(
            trainer,
            1,
            steps_per_epoch,
            TrainingBudget(cfg.epochs, cfg.budget_minutes, cfg.max_steps, "reranker."),
            cfg.seed,
            history,
        )
        what = (
            f"a {cfg.kind} reranker from {base.path if base.fallback_used else cfg.base_model} "
            f"({'mnrl' if cfg.kind == 'colbert' else cfg.loss} loss, {cfg.negatives} negatives/query)"
        )
        message = plan_message(plan, what, len(dataset), batch_size)
        log.info("%s", message)
        print(message, flush=True)
        train_start = time.monotonic()
        trainer.train()
        train_time = time.monotonic() - train_start
        save_model_files(model, staging)
        meta = base_metadata(
            "reranker", {"training_data": train_path, "snapshot": snapshot_path}, asdict(cfg), cfg.seed
        )
        meta.update(
            {
                "reranker_kind": cfg.kind,
                "kind_choice": why,
                "base_model": cfg.base_model,
                "base_model_path": base.path,
                "base_model_fallback": base.fallback_used,
                "fresh_head": base.fresh_head,
                "base_model_note": None if why else base.note,
                "loss": "mnrl" if cfg.kind == "colbert" else cfg.loss,
                "training_examples": len(rows),
                "training_rows": len(dataset),
                "training_plan": plan,
                "score": "maxsim" if cfg.kind == "colbert" else "sigmoid",
                "loss_history": history,
                "train_time_s": round(train_time, 2),
                "wall_time_s": round(time.monotonic() - start, 2),
                "peak_memory_mb": peak_memory_mb(),
                "gpu_peak_memory_mb": gpu_peak_memory_mb(),
                "device": str(model.device),
            }
        )
        write_json(staging / "training_metadata.json", meta)
    log.info(
        "saved %s in %.0fs, peak memory %.0f MiB", output_dir, meta["wall_time_s"], meta["peak_memory_mb"]
    )
    return meta


def ragd_reranker_hint(model_dir: str | Path) -> str:
    """What ragd 1.0.10 can do with the model: no setting of ragd's calls a reranker."""
    path = Path(model_dir).resolve()
    kind = "ColBERT (late-interaction)" if model_kind(path) == "colbert" else "cross-encoder"
    note = " ragd's CrossEncoderReranker cannot load it." if kind.startswith("ColBERT") else ""
    return (
        f"{path} is a {kind} reranker.{note} ragd 1.0.10 never calls a reranker (its "
        "`retrieval.rerank` is read nowhere), so there is no ragd setting to switch; rerank ragd's "
        "own results with ragd_train.reranker.FineTunedReranker(path).rerank(query, results)."
    )


# ---------------------------------------------------------------- scoring and ragd's protocol


def model_kind(path: str | Path) -> str:
    """``cross-encoder`` or ``colbert``, from the saved sentence-transformers config."""
    cfg = Path(path) / "config_sentence_transformers.json"
    if cfg.exists():
        try:
            model_type = json.loads(cfg.read_text()).get("model_type")
        except json.JSONDecodeError:
            model_type = None
        if model_type == "MultiVectorEncoder":
            return "colbert"
    return "cross-encoder"


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


# ---------------------------------------------------------------- evaluation


def _metric_rows(
    values: dict[str, dict[str, np.ndarray]], reference: dict[str, np.ndarray], samples: int, seed: int
) -> dict[str, Any]:
    from ragd_train.stats import paired_bootstrap, sign_flip_test

    out: dict[str, Any] = {}
    for metric, v in values.items():
        own = paired_bootstrap(np.zeros_like(v), v, samples=samples, seed=seed)  # CI of the mean itself
        diff = paired_bootstrap(reference[metric], v, samples=samples, seed=seed)
        out[metric] = {
            "mean": float(v.mean()),
            "ci_low": own["ci_low"],
            "ci_high": own["ci_high"],
            "delta": diff["delta"],
            "delta_ci_low": diff["ci_low"],
            "delta_ci_high": diff["ci_high"],
            "p_value": sign_flip_test(reference[metric], v, samples=samples, seed=seed),
        }
    return out


def evaluate_rerankers(
    reranker_dir: str | Path,
    embedding_dir: str | Path | None,
    embedding_base: str,
    reranker_base: str,
    test_path: str | Path,
    snapshot_path: str | Path | None,
    *,
    reranker_fallback: str | None = DEFAULT_FALLBACK,
    candidates: int = 50,
    max_length: int | None = None,
    batch_size: int = 32,
    bootstrap_samples: int = 10_000,
    seed: int = 42,
    include_base_reranker: bool = True,
    embed: Callable[[str, list[str]], np.ndarray] | None = None,
    questions_path: str | Path | None = None,
    strict_questions: bool = True,
) -> dict[str, Any]:
    """Retrieve the top ``candidates`` with each embedding model, rerank them with each reranker.

    Every combination (retriever x {none, base reranker, fine-tuned reranker}) gets NDCG@10 and
    MRR@10 with a 95% bootstrap CI of its mean and of its difference to the retriever alone, on
    the held-out synthetic queries and, with ``questions_path``, on natural questions (a hit per
    document; then the headline). ``embed(model_name, texts)`` replaces the encoder (the rule
    passes the embedding cache's).
    """
    from ragd_train.evaluation import corpus_from_test, load_questions, load_test_set, to_documents
    from ragd_train.ir_metrics import METRICS, normalize, recall_at_k, retrieve
    from ragd_train.mining import encode, load_encoder
    from ragd_train.snapshot import load_snapshot

    start = time.monotonic()
    queries, qrels_map = load_test_set(test_path)
    chunks = load_snapshot(snapshot_path) if snapshot_path else corpus_from_test(test_path)
    doc_ids = [c["chunk_id"] for c in chunks]
    texts = [c["text"] for c in chunks]
    missing = sorted({d for rel in qrels_map.values() for d in rel} - set(doc_ids))
    if missing:
        raise RagdTrainError(
            f"{test_path}: positive_id {missing[0]!r} (and {len(missing) - 1} more) not in corpus"
        )
    qids = list(queries)
    qrels = [qrels_map[q] for q in qids]
    qtexts = [queries[q] for q in qids]
    # (name, first query, end, qrels, level): the natural questions follow the synthetic queries
    sets = [("synthetic", 0, len(qids), qrels, "chunk")]
    if questions_path:
        nq, nq_qrels = load_questions(questions_path, chunks, strict=strict_questions)
        sets.insert(0, ("questions", len(qids), len(qids) + len(nq), [nq_qrels[q] for q in nq], "document"))
        qtexts += list(nq.values())
    document_of = {c["chunk_id"]: c["document_id"] for c in chunks}
    k = min(candidates, len(doc_ids))
    timings: dict[str, float] = {}

    retrievers = {"base": embedding_base} | ({"finetuned": str(embedding_dir)} if embedding_dir else {})
    top: dict[str, np.ndarray] = {}
    for side, name in retrievers.items():
        t = time.monotonic()
        if embed is None:
            model = load_encoder(name)
            corpus_emb, query_emb = encode(model, texts), encode(model, qtexts)
            del model
        else:
            corpus_emb, query_emb = embed(name, texts), embed(name, qtexts)
        top[side], _ = retrieve(normalize(query_emb), normalize(corpus_emb), k)
        timings[f"retrieve_{side}"] = round(time.monotonic() - t, 2)

    rerankers = ({"base": reranker_base} if include_base_reranker else {}) | {"finetuned": str(reranker_dir)}
    notes: dict[str, str | None] = {}
    scores: dict[str, dict[tuple[int, int], float]] = {}
    kind = model_kind(reranker_dir)  # the base reranker is scored the way the fine-tuned one is
    for side, name in rerankers.items():
        t = time.monotonic()
        scorer = PairScorer(
            name,
            kind=kind if side == "base" else None,
            max_length=max_length,
            batch_size=batch_size,
            fallback=reranker_fallback if side == "base" else None,
            seed=seed,
        )
        notes[side] = scorer.note
        if side == "base" and scorer.fresh_head:
            notes[side] = (scorer.note or f"'{name}' has no trained scoring head") + (
                ": its head is untrained (a cross-encoder's scores are noise), shown for completeness"
            )
        per_query = [sorted({int(d) for r in top.values() for d in r[i]}) for i in range(len(qtexts))]
        got = scorer.score(qtexts, [[texts[d] for d in docs] for docs in per_query])
        scores[side] = {
            (i, d): float(s) for i, docs in enumerate(per_query) for d, s in zip(docs, got[i], strict=True)
        }
        timings[f"rerank_{side}"] = round(time.monotonic() - t, 2)
        del scorer

    combos: list[dict[str, Any]] = []
    recall: dict[str, float] = {}
    for set_name, lo, hi, set_qrels, level in sets:

        def metrics(ranked: list[list[str]], set_qrels=set_qrels, level=level) -> dict[str, np.ndarray]:
            if level == "document":
                ranked = to_documents(ranked, document_of)
            return {f"{m}@{c}": METRICS[m](ranked, set_qrels, c) for m, cut in KS.items() for c in cut}

        per_query: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        for retr, idx in top.items():
            plain = [[doc_ids[d] for d in row] for row in idx[lo:hi]]
            if set_name == sets[0][0]:
                ranked_docs = to_documents(plain, document_of) if level == "document" else plain
                recall[retr] = float(recall_at_k(ranked_docs, set_qrels, k).mean())
            per_query[(retr, "none")] = metrics(plain)
            for rr in rerankers:
                ranked = []
                for i, row in enumerate(idx[lo:hi], start=lo):
                    order = sorted(range(len(row)), key=lambda j, i=i, row=row: -scores[rr][(i, int(row[j]))])
                    ranked.append([doc_ids[int(row[j])] for j in order])
                per_query[(retr, rr)] = metrics(ranked)
        for (retr, rr), values in per_query.items():
            combos.append(
                {
                    "test_set": set_name,
                    "retriever": retr,
                    "reranker": rr,
                    "metrics": _metric_rows(values, per_query[(retr, "none")], bootstrap_samples, seed),
                }
            )
    main_retriever = "finetuned" if "finetuned" in top else "base"
    primary = sets[0][0]
    head_row = next(
        c
        for c in combos
        if c["test_set"] == primary and c["retriever"] == main_retriever and c["reranker"] == "finetuned"
    )
    alone = next(
        c
        for c in combos
        if c["test_set"] == primary and c["retriever"] == main_retriever and c["reranker"] == "none"
    )
    h = head_row["metrics"][HEADLINE]
    improved = h["delta"] > 0
    return {
        "reranker": str(reranker_dir),
        "reranker_base": reranker_base,
        "reranker_notes": notes,
        "embedding": str(embedding_dir) if embedding_dir else None,
        "embedding_base": embedding_base,
        "test_data": str(test_path),
        "snapshot": str(snapshot_path) if snapshot_path else "positives and negatives of the test data",
        "queries": len(qids),
        "questions": str(questions_path) if questions_path else None,
        "corpus_size": len(doc_ids),
        "candidates": k,
        f"recall@{k}": recall,
        "combinations": combos,
        "headline": {
            "metric": HEADLINE,
            "test_set": primary,
            "retriever": main_retriever,
            "comparison": f"{main_retriever} embeddings + fine-tuned reranker vs the embeddings alone",
            "base": alone["metrics"][HEADLINE]["mean"],
            "finetuned": h["mean"],
            "delta": h["delta"],
            "ci_low": h["delta_ci_low"],
            "ci_high": h["delta_ci_high"],
            "p_value": h["p_value"],
        },
        "verdict": "improves" if improved else "does not improve",
        "timings_s": timings | {"total": round(time.monotonic() - start, 2)},
    }


NAMES = {"base": "base", "finetuned": "fine-tuned", "none": "none"}


def reranker_message(report: dict[str, Any]) -> str:
    """One sentence: does the fine-tuned reranker improve on its retriever alone?"""
    h = report["headline"]
    numbers = (
        f"NDCG@10 {h['base']:.4f} -> {h['finetuned']:.4f} (delta {h['delta']:+.4f}, 95% CI "
        f"[{h['ci_low']:+.4f}, {h['ci_high']:+.4f}], p={h['p_value']:.3g})"
    )
    who = f"the {NAMES[h['retriever']]} embedding model's top {report['candidates']}"
    if h.get("test_set") == "questions":
        numbers = f"natural questions: {numbers}"
    if report["verdict"] == "improves":
        return f"Reranking {who} with the fine-tuned reranker improves retrieval: {numbers}."
    return f"Reranking {who} with the fine-tuned reranker does NOT improve retrieval: {numbers}."


def markdown_reranker_report(report: dict[str, Any]) -> str:
    k = report["candidates"]
    lines = [
        f"# Reranker evaluation: {Path(report['reranker']).name}",
        "",
        reranker_message(report),
        "",
        f"{report['queries']} test queries from `{report['test_data']}` against "
        f"{report['corpus_size']} chunks; each embedding model retrieves the top {k}, "
        "which each reranker reorders.",
        "",
        f"- embeddings: base `{report['embedding_base']}`, fine-tuned "
        + (f"`{report['embedding']}`" if report["embedding"] else "(none given)"),
        f"- rerankers: base `{report['reranker_base']}`"
        + ("" if any(c["reranker"] == "base" for c in report["combinations"]) else " (not evaluated)")
        + f", fine-tuned `{report['reranker']}`",
        f"- recall@{k} of the candidates (the ceiling for reranking): "
        + ", ".join(f"{NAMES[s]} {v:.4f}" for s, v in report[f"recall@{k}"].items()),
        "",
    ]
    for side, note in report["reranker_notes"].items():
        if note:
            lines += [f"> {NAMES[side]} reranker: {note}", ""]
    lines += [
        "| test set | embeddings | reranker | NDCG@10 [95% CI] | vs embeddings alone "
        "| MRR@10 [95% CI] | vs embeddings alone |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in report["combinations"]:
        cells = []
        for metric in ("ndcg@10", "mrr@10"):
            m = c["metrics"][metric]
            cells.append(f"{m['mean']:.4f} [{m['ci_low']:.4f}, {m['ci_high']:.4f}]")
            cells.append(
                "-"
                if c["reranker"] == "none"
                else f"{m['delta']:+.4f} [{m['delta_ci_low']:+.4f}, {m['delta_ci_high']:+.4f}], "
                f"p={m['p_value']:.3g}"
            )
        test_set = c.get("test_set", "synthetic")
        lines.append(
            f"| {test_set} | {NAMES[c['retriever']]} | {NAMES[c['reranker']]} | " + " | ".join(cells) + " |"
        )
    lines += ["", f"Timings (s): {json.dumps(report['timings_s'])}"]
    return "\n".join(lines) + "\n"


def write_reranker_report(report: dict[str, Any], json_path: str | Path, md_path: str | Path) -> None:
    with atomic_open(md_path) as handle:
        handle.write(markdown_reranker_report(report))
    write_json(json_path, report)
