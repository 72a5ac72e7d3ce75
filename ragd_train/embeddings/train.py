"""Fine-tune a sentence-transformers bi-encoder: MNRL (+ Matryoshka) on (query, positive, negatives)."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any, ClassVar

from ragd_train.errors import InputError
from ragd_train.jsonl_io import read_records, record_lines, write_json
from ragd_train.metadata import base_metadata, hash_inputs, run_stats
from ragd_train.records import Screen
from ragd_train.settings import SEED_DEFAULT, EmbeddingsSettings
from ragd_train.staging import ensure_absent, save_model_files, staged_output
from ragd_train.training import TrainingBudget, plan_message, plan_training, trainer_arguments

log = logging.getLogger("ragd_train")

# Losses that compare texts only within one example (no in-batch negatives).
DISTILL_LOSSES = ("margin_mse", "distill_kl")
# Softmax temperature of the listwise loss, for student cosines and teacher scores alike (the
# teacher's are in the base model's cosine units); 0.05 is MNRL's scale of 20.
DISTILL_TEMPERATURE = 0.05


class EmbeddingTrainingConfig(EmbeddingsSettings):
    """The ``embeddings`` settings and the seed: everything that decides the trained weights."""

    SECTION: ClassVar[str] = "embeddings"
    seed: int = SEED_DEFAULT


def matryoshka_dims(requested: str | list[int], model_dim: int) -> list[int]:
    """Resolve the Matryoshka dims: ``auto`` halves the model's own dim, ``none`` turns it off."""
    if requested == "none":
        return []
    if requested == "auto":
        dims = [model_dim]
        while dims[-1] // 2 >= 32 and len(dims) < 4:
            dims.append(dims[-1] // 2)
        return dims
    too_big = [d for d in requested if d > model_dim]
    if too_big:
        raise InputError(
            f"{too_big} exceed the model's embedding dimension {model_dim}",
            path="config",
            field="embeddings.matryoshka_dims",
        )
    return sorted(set(requested) | {model_dim}, reverse=True)


def read_training_records(path: str | Path) -> list[dict[str, Any]]:
    """Training records (``query`` and ``positive`` required) from JSONL, or JSON ending in ``.json``."""
    records = read_records(path, required=("query", "positive"), strings=("query", "positive"))
    if not records:
        raise InputError("no training records", path=path)
    return records


def teacher_kind(records: list[dict[str, Any]]) -> str | None:
    """``lists`` or ``pairs`` when every record carries the teacher's labels (what generate-data
    writes), else None."""
    if all(isinstance(r.get("teacher_list"), dict) for r in records):
        return "lists"
    if all(isinstance(r.get("teacher_pair"), dict) for r in records):
        return "pairs"
    return None


def _text(item: Any, path: str | Path, line: int, field: str) -> str:
    text = item.get("text") if isinstance(item, dict) else None
    if not isinstance(text, str):
        raise InputError("expected an object with text", path=path, line=line, field=field)
    return text


def _number(value: Any, path: str | Path, line: int, field: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InputError("expected a number", path=path, line=line, field=field)
    return float(value)


def teacher_rows(records: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """(anchor, first, second, label) rows for MarginMSE from each record's ``teacher_pair``."""
    rows = []
    screen = Screen(path)
    for line, record in zip(record_lines(path), records, strict=False):
        if not screen.usable(record):
            continue
        pair = record.get("teacher_pair")
        if not isinstance(pair, dict):
            raise InputError(
                "missing (margin_mse needs generate-data's pairs)", path=path, line=line, field="teacher_pair"
            )
        first = _text(pair.get("first"), path, line, "teacher_pair.first")
        second = _text(pair.get("second"), path, line, "teacher_pair.second")
        margin = _number(pair.get("margin"), path, line, "teacher_pair.margin")
        rows.append({"anchor": str(record["query"]), "first": first, "second": second, "label": margin})
    screen.report(len(rows))
    return rows


def teacher_list_rows(records: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """(anchor, candidate_1..n, label = the n teacher scores) rows for the listwise KL loss from
    each record's ``teacher_list``; every record must hold the same number of candidates."""
    rows: list[dict[str, Any]] = []
    size = 0
    screen = Screen(path)
    for line, record in zip(record_lines(path), records, strict=False):
        if not screen.usable(record):
            continue
        item = record.get("teacher_list")
        cands = item.get("candidates") if isinstance(item, dict) else None
        if not isinstance(cands, list) or len(cands) < 2:
            raise InputError(
                "expected {candidates: [{text, score}, ...]} with at least two (distill_kl needs a "
                "scored candidate list in every record)",
                path=path,
                line=line,
                field="teacher_list",
            )
        size = size or len(cands)
        if len(cands) != size:
            raise InputError(
                f"{len(cands)} candidates, earlier records have {size}",
                path=path,
                line=line,
                field="teacher_list.candidates",
            )
        row: dict[str, Any] = {"anchor": str(record["query"])}
        for k, cand in enumerate(cands):
            row[f"candidate_{k + 1}"] = _text(cand, path, line, f"teacher_list.candidates[{k}]")
        row["label"] = [
            _number(c.get("score"), path, line, f"teacher_list.candidates[{k}].score")
            for k, c in enumerate(cands)
        ]
        rows.append(row)
    screen.report(len(rows))
    return rows


def load_training_examples(
    path: str | Path, hard_negatives: int, seed: int, records: list[dict[str, Any]] | None = None
) -> list[dict[str, str]]:
    """(anchor, positive, negative_1..k) rows from training JSONL/JSON.

    Records with fewer than ``k`` mined negatives are topped up with negatives of records
    from other documents, drawn without replacement (seeded), so every row has the same columns.
    When some record cannot be topped up to ``k`` (too few negatives of other documents), every
    row gets as many as that record has, with one warning; ``k`` drops to 0 (in-batch negatives
    only) at worst. A draw never repeats, so this always ends.
    """
    if records is None:
        records = read_training_records(path)
    pool: list[tuple[str, str]] = []
    for index, (line, record) in enumerate(zip(record_lines(path), records, strict=False), start=1):
        negatives = record.get("negatives") or []
        if not isinstance(negatives, list):
            raise InputError("expected a list", path=path, line=line, field="negatives")
        for neg in negatives:
            text = neg.get("text") if isinstance(neg, dict) else neg
            if not isinstance(text, str):
                raise InputError("negative without text", path=path, line=line, field="negatives")
            pool.append((str(record.get("source_document", index)), text))
    if hard_negatives and not pool:
        log.warning("%s has no negatives; training with in-batch negatives only", path)
        hard_negatives = 0
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    screen = Screen(path)  # empty queries and negatives equal to their positive: dropped, counted
    for index, record in enumerate(records):
        if not screen.usable(record):
            continue
        row = {"anchor": str(record["query"]), "positive": str(record["positive"])}
        mined = [n["text"] if isinstance(n, dict) else n for n in record.get("negatives") or []]
        texts = screen.negatives(mined, row["positive"])[:hard_negatives]
        doc = str(record.get("source_document", index + 1))
        if len(texts) < hard_negatives:
            eligible = list(
                dict.fromkeys(
                    t for d, t in pool if d != doc and t not in texts and t.strip() != row["positive"].strip()
                )
            )
            texts += rng.sample(eligible, min(hard_negatives - len(texts), len(eligible)))
        rows.append({**row, **{f"negative_{k}": t for k, t in enumerate(texts, start=1)}})
    screen.report(len(rows))
    fewest = min((sum(key.startswith("negative_") for key in r) for r in rows), default=0)
    if fewest < hard_negatives:
        log.warning(
            "%s: some records have only %d negatives, and too few records of other documents to "
            "top them up to %d; training every record with %d hard negatives",
            path,
            fewest,
            hard_negatives,
            fewest,
        )
        for r in rows:
            for k in range(fewest + 1, hard_negatives + 1):
                r.pop(f"negative_{k}", None)
    return rows


def loss_name(requested: str, device: str, teacher: str | None = None) -> str:
    """``auto``: MarginMSE on the teacher's pairs and listwise KL on its lists when the data
    carries them (corpus-only data, where distillation beats contrastive training;
    ``docs/results.md``), else the cached (GradCache) MNRL on CPU, where memory is the limit,
    and plain MNRL on a GPU."""
    if requested != "auto":
        return requested
    if teacher == "lists":
        return "distill_kl"
    if teacher == "pairs":
        return "margin_mse"
    return "mnrl" if device.startswith(("cuda", "mps")) else "cached_mnrl"


def memory_bounded_batch(
    loss: str,
    device: str,
    batch_size: int,
    mini_batch_size: int,
    max_seq_length: int = 128,
    texts_per_example: int = 3,
) -> tuple[int, int]:
    """(per-step batch, gradient accumulation steps) for ``batch_size`` examples per update.

    Distillation losses compare texts only within an example, so accumulating gradients over
    mini-batches is the same update as one full batch; on CPU it keeps peak memory bounded by the
    mini-batch, as the cached MNRL does. Activations grow with batch times length times texts per
    example, so a mini-batch takes at most ``mini_batch_size / 2`` three-text examples at 128
    tokens and proportionally fewer at longer lengths or with more texts (8 at 128 and 4 at 256
    for the default 16; SciFact, MiniLM, batch 32, mini-batches of 8: 2,141 MiB peak at 128
    tokens, 3,342 MiB at 256). A mini-batch is the largest divisor of ``batch_size`` up to that
    limit, so every update sees ``batch_size`` examples.
    """
    limit = max(1, mini_batch_size * 64 * 3 // (max(1, max_seq_length) * max(3, texts_per_example)))
    if loss not in DISTILL_LOSSES or device.startswith(("cuda", "mps")) or batch_size <= limit:
        return batch_size, 1
    per_device = max(d for d in range(1, limit + 1) if batch_size % d == 0)
    return per_device, batch_size // per_device


def build_loss(model: Any, cfg: EmbeddingTrainingConfig, dims: list[int], name: str | None = None) -> Any:
    from sentence_transformers.sentence_transformer import losses

    name = name or loss_name(cfg.loss, str(model.device))
    if name == "margin_mse":
        base = losses.MarginMSELoss(model)
    elif name == "distill_kl":
        from sentence_transformers.util import pairwise_cos_sim

        base = losses.DistillKLDivLoss(
            model, similarity_fct=pairwise_cos_sim, temperature=DISTILL_TEMPERATURE
        )
    elif name == "cached_mnrl":
        base = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size)
    else:
        base = losses.MultipleNegativesRankingLoss(model)
    return losses.MatryoshkaLoss(model, base, matryoshka_dims=dims) if dims else base


def train_embeddings(
    train_path: str | Path,
    output_dir: str | Path,
    cfg: EmbeddingTrainingConfig,
    *,
    snapshot_path: str | Path | None = None,
    dev_path: str | Path | None = None,
    precision: str = "auto",
    device: str | None = None,
) -> dict[str, Any]:
    """Train into a temporary directory next to ``output_dir``; move it into place when complete.

    With a dev split (``dev_path`` and ``snapshot_path``), the shipped weights are the
    interpolation between base and fine-tuned that scores best on it (``embeddings.interpolation``;
    ``precision`` is ``encoding.precision``, for those encodings).
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from ragd_train.encoding import open_sentence_transformer
    from ragd_train.hub import resolve_model
    from ragd_train.precision import resolve_precision

    start = time.monotonic()
    output_dir = Path(output_dir)
    ensure_absent(output_dir)
    torch.manual_seed(cfg.seed)
    dev = {"dev_data": dev_path} if dev_path is not None else {}
    inputs = hash_inputs({"training_data": train_path, "snapshot": snapshot_path} | dev)  # before training
    records = read_training_records(train_path)
    resolved = resolve_model(cfg.base_model)
    model = open_sentence_transformer(resolved, device=device)  # one-line errors for a bad base
    loss = loss_name(cfg.loss, str(model.device), teacher_kind(records))
    if loss == "margin_mse":
        rows = teacher_rows(records, train_path)
    elif loss == "distill_kl":
        rows = teacher_list_rows(records, train_path)
    else:
        rows = load_training_examples(train_path, cfg.hard_negatives, cfg.seed, records)
    served_length = model.max_seq_length  # what the base reads when it encodes; the model keeps it
    model.max_seq_length = cfg.max_seq_length
    model_dim = model.get_embedding_dimension()
    # MatryoshkaLoss over the teacher's margins cost SciFact 0.025 NDCG@10 (docs/results.md):
    # "auto" leaves it off for distillation; an explicit list still turns it on.
    auto_off = loss in DISTILL_LOSSES and cfg.matryoshka_dims == "auto"
    dims = [] if auto_off else matryoshka_dims(cfg.matryoshka_dims, model_dim)
    dataset = Dataset.from_list(rows)
    batch_size = min(cfg.batch_size, len(rows))
    per_device, accumulation = memory_bounded_batch(
        loss, str(model.device), batch_size, cfg.mini_batch_size, cfg.max_seq_length, len(rows[0]) - 1
    )
    steps_per_epoch = -(-len(rows) // batch_size)
    train_precision = resolve_precision(cfg.precision, model.device.type)
    history: list[dict[str, float]] = []

    with staged_output(output_dir) as staging:
        args = trainer_arguments(
            SentenceTransformerTrainingArguments,
            staging,
            epochs=cfg.epochs,
            batch_size=per_device,
            gradient_accumulation_steps=accumulation,
            learning_rate=cfg.learning_rate,
            warmup_ratio=cfg.warmup_ratio,
            seed=cfg.seed,
            device=device or model.device.type,
            bf16=train_precision == "bf16",
            # in-batch negatives need distinct texts; distillation compares only within a row
            batch_sampler=BatchSamplers.BATCH_SAMPLER
            if loss in DISTILL_LOSSES
            else BatchSamplers.NO_DUPLICATES,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            loss=build_loss(model, cfg, dims, loss),
        )
        plan = plan_training(
            trainer,
            accumulation,
            steps_per_epoch,
            TrainingBudget(cfg.epochs, cfg.budget_minutes, cfg.max_steps, "embeddings.", cfg.max_examples),
            cfg.seed,
            history,
        )
        message = plan_message(
            plan, f"{cfg.base_model} with {loss} ({train_precision})", len(rows), batch_size
        )
        log.info("%s (dims %s)", message, dims or "-")
        print(message, flush=True)
        train_start = time.monotonic()
        trainer.train()
        train_time = time.monotonic() - train_start
        model.max_seq_length = served_length  # trained on shorter texts, still reads whole chunks
        from ragd_train.embeddings.interpolate import choose_interpolation

        t = time.monotonic()
        interpolation = choose_interpolation(
            model,
            resolved,
            dev_path,
            snapshot_path,
            list(cfg.interpolation),
            corpus_size=cfg.dev_corpus,
            precision=precision,
            seed=cfg.seed,
            cache_dir="cache" if Path("cache").is_dir() else None,
        )
        interpolation["time_s"] = round(time.monotonic() - t, 1)
        print(f"shipped weights: {interpolation['reason']}", flush=True)
        save_model_files(model, staging)
        meta = base_metadata("embeddings", inputs, cfg.model_dump(), cfg.seed)
        meta.update(
            {
                "base_model": cfg.base_model,
                "base_model_path": resolved,
                "training_examples": len(rows),
                "training_plan": plan,
                "loss": loss,
                "precision": train_precision,
                "encoding_precision": resolve_precision(precision),
                "interpolation": interpolation,
                "output_dimension": model_dim,
                "matryoshka_dims": dims,
                "max_seq_length": served_length,
                "loss_history": history,
                **run_stats(train_time, start, model.device),
            }
        )
        write_json(staging / "training_metadata.json", meta)
    log.info(
        "saved %s (dim %d) in %.0fs, peak memory %.0f MiB",
        output_dir,
        model_dim,
        meta["wall_time_s"],
        meta["peak_memory_mb"],
    )
    return meta
