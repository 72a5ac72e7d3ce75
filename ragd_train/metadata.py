"""training_metadata.json: input hashes, config, package versions, measurements."""

from __future__ import annotations

import functools
import hashlib
import platform
import resource
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from ragd_train.errors import InputError
from ragd_train.jsonl_io import read_json_object

METADATA_FILE = "training_metadata.json"
PACKAGES = ("ragd-train", "torch", "sentence-transformers", "transformers", "datasets", "accelerate", "peft")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


def gpu_peak_memory_mb() -> float | None:
    """Peak GPU memory PyTorch allocated in this process, in MiB; ``None`` without CUDA.

    Reads ``torch`` only when something already imported it, so CPU-only callers pay nothing.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def hash_inputs(inputs: dict[str, str | Path | None]) -> dict[str, dict[str, str]]:
    """``{name: {path, sha256}}`` of a model's input files. Taken before training starts, so an
    input deleted or changed while the model trains neither fails the run nor is misrecorded."""
    hashed = {}
    for name, path in inputs.items():
        if path is None:
            continue
        try:
            hashed[name] = {"path": str(path), "sha256": sha256_file(path)}
        except OSError as exc:
            raise InputError(f"cannot be read ({exc.strerror})", path=path) from None
    return hashed


def base_metadata(
    kind: str,
    inputs: dict[str, str | Path | None] | dict[str, dict[str, str]],
    config: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Fields every model directory's metadata carries; ``inputs`` as ``hash_inputs`` made them
    before training (or paths, hashed now)."""
    hashed = {name: v for name, v in inputs.items() if isinstance(v, dict)}
    paths = {name: v for name, v in inputs.items() if not isinstance(v, dict)}
    return {
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {**hash_inputs(paths), **hashed},  # type: ignore[arg-type]
        "config": config,
        "seed": seed,
        "versions": package_versions(),
    }


def run_stats(train_time: float, start: float, device: Any) -> dict[str, Any]:
    """The timings, peak memory and device every model's ``training_metadata.json`` records."""
    return {
        "train_time_s": round(train_time, 2),
        "wall_time_s": round(time.monotonic() - start, 2),
        "peak_memory_mb": peak_memory_mb(),
        "gpu_peak_memory_mb": gpu_peak_memory_mb(),
        "device": str(device),
    }


class InputFile(BaseModel):
    """One input of a training run, as ``base_metadata`` records it."""

    model_config = ConfigDict(extra="allow")

    path: str
    sha256: str


class TrainingMetadata(BaseModel):
    """A model directory's ``training_metadata.json``.

    The first six fields are ``base_metadata``'s, in every file; the rest are what the trainers add
    for their kind (``None`` where a kind has none). Anything else a writer adds is kept as is.
    """

    model_config = ConfigDict(extra="allow")

    kind: str
    created: str
    inputs: dict[str, InputFile]
    config: dict[str, Any]
    seed: int
    versions: dict[str, str]
    base_model: str | None = None
    base_model_path: str | None = None
    backend: str | None = None  # llm: peft, mlx or unsloth
    output_dimension: int | None = None  # embeddings
    matryoshka_dims: list[int] | None = None  # embeddings
    max_seq_length: int | None = None  # embeddings
    reranker_kind: str | None = None  # reranker
    training_examples: int | None = None
    train_time_s: float | None = None
    wall_time_s: float | None = None
    peak_memory_mb: float | None = None
    gpu_peak_memory_mb: float | None = None
    device: str | None = None
    precision: str | None = None  # embeddings: bf16 or fp32 training arithmetic
    fused_from: str | None = None  # llm-fused


M = TypeVar("M", bound=BaseModel)


def _reason(error: Any) -> str:
    """A pydantic error as the words after ``field 'F'``: ``is missing``, ``should be a valid integer``."""
    if error["type"] == "missing":
        return "is missing"
    if error["type"] in ("dict_type", "model_type", "model_attributes_type"):
        return "is not an object"
    return str(error["msg"]).replace("Input should", "should", 1)


@functools.cache
def _partial(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with each top-level field optional (``None`` when absent)."""
    fields: dict[str, Any] = {
        name: (field.annotation | None, None if field.is_required() else field)
        for name, field in model.model_fields.items()
    }
    return create_model(f"Partial{model.__name__}", __config__=model.model_config, **fields)


def validate_as(model: type[M], data: dict[str, Any], path: str | Path, *, partial: bool = False) -> M:
    """``data`` (read from ``path``) as ``model``; the first fault as a one-line :class:`InputError`.

    ``partial``: top-level fields ``data`` lacks read ``None`` instead of being refused (for readers
    of one or two fields, which accept hand-written or older files); those it has are validated.
    """
    try:
        if not partial:
            return model.model_validate(data)
        present = _partial(model).model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        raise InputError(_reason(error), path=path, field=field) from None
    return model.model_construct(_fields_set=present.model_fields_set, **dict(present))


def metadata_path(model_dir_or_file: str | Path) -> Path:
    """``training_metadata.json`` of a model directory (a ``.json`` path is taken as it is)."""
    path = Path(model_dir_or_file)
    return path if path.suffix == ".json" else path / METADATA_FILE


def read_metadata(
    model_dir_or_file: str | Path, *, partial: bool = False, need: Iterable[str] = ()
) -> TrainingMetadata:
    """A model's ``training_metadata.json``; a one-line :class:`InputError` (file, field) otherwise.

    ``partial``: see :func:`validate_as`. ``need``: fields that must be there and not ``null``.
    """
    path = metadata_path(model_dir_or_file)
    meta = validate_as(TrainingMetadata, read_json_object(path), path, partial=partial)
    for name in need:
        if getattr(meta, name, None) is None:
            raise InputError("is missing", path=path, field=name)
    return meta
