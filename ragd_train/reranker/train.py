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

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ragd_train.errors import InputError
from ragd_train.jsonl_io import read_records, write_json
from ragd_train.metadata import base_metadata, hash_inputs, run_stats
from ragd_train.records import Screen
from ragd_train.settings import SEED_DEFAULT, RerankerSettings
from ragd_train.staging import ensure_absent, save_model_files, staged_output

log = logging.getLogger("ragd_train")

DEFAULT_RERANKER = RerankerSettings.model_fields["base_model"].default  # ragd's DEFAULT_RERANKER_MODEL
DEFAULT_FALLBACK = RerankerSettings.model_fields["fallback_model"].default
KS = {"ndcg": [10], "mrr": [10]}
HEADLINE = "ndcg@10"


class RerankerTrainingConfig(RerankerSettings):
    """The ``reranker`` settings and the seed: everything that decides the trained weights."""

    SECTION: ClassVar[str] = "reranker"
    seed: int = SEED_DEFAULT


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
    from ragd_train.hub import ModelNotFoundError, resolve_model

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
    from ragd_train.hub import ModelNotFoundError, resolve_model

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
        "with a fresh scoring head made rankings worse in our benchmarks (docs/results.md). Set "
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
    screen = Screen(path)  # the same policy as the embedding trainer's (ragd_train/records.py)
    for record, doc, texts in zip(records, docs, mined, strict=True):
        if not screen.usable(record):
            continue
        positive = str(record["positive"])
        chosen = screen.negatives(texts, positive)[:negatives]
        candidates = [
            text
            for other, text in pool
            if other != doc and text.strip() != positive.strip() and text not in chosen
        ]
        if len(chosen) < negatives and not candidates:
            raise InputError(
                "a reranker needs negatives: the records have none and no other documents", path=path
            )
        while len(chosen) < negatives:
            chosen.append(rng.choice(candidates))
        rows.append({"query": str(record["query"]), "positive": positive, "negatives": chosen})
    screen.report(len(rows))
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
        return max(1, cfg.batch_size // (1 + cfg.negatives_per_query))
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
    return losses.BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(cfg.negatives_per_query)))


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

    from ragd_train.training import TrainingBudget, plan_message, plan_training, trainer_arguments

    start = time.monotonic()
    kind, why = choose_kind(cfg)
    if why:
        log.warning("%s", why)
    cfg = cfg.model_copy(update={"kind": kind})
    output_dir = Path(output_dir)
    ensure_absent(output_dir)
    inputs = hash_inputs({"training_data": train_path, "snapshot": snapshot_path})  # before training
    rows = load_reranker_examples(train_path, cfg.negatives_per_query, cfg.seed)
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
            TrainingBudget(cfg.epochs, cfg.budget_minutes, cfg.max_steps, "reranker.", cfg.max_examples),
            cfg.seed,
            history,
        )
        what = (
            f"a {cfg.kind} reranker from {base.path if base.fallback_used else cfg.base_model} "
            f"({'mnrl' if cfg.kind == 'colbert' else cfg.loss} loss, "
            f"{cfg.negatives_per_query} negatives/query)"
        )
        message = plan_message(plan, what, len(dataset), batch_size)
        log.info("%s", message)
        print(message, flush=True)
        train_start = time.monotonic()
        trainer.train()
        train_time = time.monotonic() - train_start
        save_model_files(model, staging)
        meta = base_metadata("reranker", inputs, cfg.model_dump(), cfg.seed)
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
                **run_stats(train_time, start, model.device),
            }
        )
        write_json(staging / "training_metadata.json", meta)
    log.info(
        "saved %s in %.0fs, peak memory %.0f MiB", output_dir, meta["wall_time_s"], meta["peak_memory_mb"]
    )
    return meta
