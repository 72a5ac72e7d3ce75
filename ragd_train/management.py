"""Model management in a workspace: list, delete (path-safe), export (tar.gz with checksums, or HF dir)."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragd_train.errors import InputError, RagdTrainError
from ragd_train.jsonl_io import atomic_open, check_output_path, created_mode, read_json_object
from ragd_train.metadata import (
    METADATA_FILE,
    TrainingMetadata,
    metadata_path,
    sha256_file,
    validate_as,
)

HF_FILES_SKIP = {METADATA_FILE}


def model_path(models_dir: Path, name: str) -> Path:
    """``models_dir/name``; names resolving outside ``models_dir`` (``..``, absolute, symlinks) refused."""
    if not name or name in (".", "..") or Path(name).is_absolute() or "/" in name or "\\" in name:
        raise RagdTrainError(f"'{name}' is not a model name (a plain directory name under {models_dir})")
    root = models_dir.resolve()
    candidate = models_dir / name
    resolved = candidate.resolve()
    if resolved.parent != root:
        raise RagdTrainError(f"'{name}' resolves outside {root} ({resolved}); refused")
    if candidate.is_symlink():
        raise RagdTrainError(f"{candidate} is a symlink, not a model directory; remove the link itself")
    if not candidate.is_dir():
        raise RagdTrainError(f"no model '{name}' in {root}")
    return candidate


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _problem(exc: InputError) -> str:
    """``exc`` as a listing's warning: ``FILE: field 'F' is not an object`` (no colon after the field)."""
    if exc.field is None:
        return str(exc)
    return f"{exc.path}: field '{exc.field}' {exc.reason}"


def _metadata(path: Path, problems: list[str]) -> TrainingMetadata | None:
    """What can be read of ``path``: fields at fault are left out, each named in ``problems``."""
    try:
        data = read_json_object(path)
    except InputError as exc:
        problems.append(str(exc))
        return None
    while True:  # a listing never fails on one bad field, nor on one bad file
        try:
            return validate_as(TrainingMetadata, data, path, partial=True)
        except InputError as exc:
            problems.append(_problem(exc))
            key = (exc.field or "").split(".")[0]
            if key not in data:
                return None
            del data[key]


def _headline(reports_dir: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """The report's headline as written (not validated: the table shows ``-`` for what is no number)."""
    report = reports_dir / f"{name}.json"
    if not report.exists():
        return None, None
    try:
        head = read_json_object(report).get("headline")
    except InputError as exc:
        return None, str(exc)
    if head is not None and not isinstance(head, dict):
        return None, f"{report}: field 'headline' is not an object"
    return head, None


def list_models(workspace: Path) -> list[dict[str, Any]]:
    """One row per model directory: name, kind, base, created, size, training-data hash, headline metric."""
    models_dir = workspace / "models"
    rows: list[dict[str, Any]] = []
    if not models_dir.is_dir():
        return rows
    for path in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta_path = metadata_path(path)
        problems: list[str] = []
        meta = _metadata(meta_path, problems) if meta_path.exists() else None
        data_input = (meta.inputs or {}).get("training_data") if meta else None
        headline, problem = _headline(workspace / "reports", path.name)
        problems += [problem] if problem else []
        created = meta.created if meta else None
        if created is None:
            created = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")

        rows.append(
            {
                "name": path.name,
                "kind": meta.kind if meta and "kind" in meta.model_fields_set else "unknown",
                "base_model": meta.base_model if meta else None,
                "created": created,
                "size_bytes": _dir_size(path),
                "training_data_sha256": data_input.sha256 if data_input else None,
                "headline": headline,
                "path": str(path.resolve()),
                "problems": problems,
            }
        )
    return rows


def delete_model(workspace: Path, name: str) -> Path:
    """Remove one model directory (and nothing outside ``models/``)."""
    path = model_path(workspace / "models", name)
    shutil.rmtree(path)
    return path


def _manifest(files: list[tuple[Path, str]]) -> dict[str, Any]:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {
            arcname: {"sha256": sha256_file(path), "size": path.stat().st_size} for path, arcname in files
        },
    }


def export_model(workspace: Path, name: str, dest: Path, fmt: str = "tar") -> Path:
    """Export ``name``: ``tar`` = tar.gz with metadata, report and checksums; ``hf`` = plain directory;
    ``ollama`` = a LoRA adapter in PEFT layout with its Modelfile, for ``ollama create``."""
    src = model_path(workspace / "models", name)
    links = [p for p in sorted(src.rglob("*")) if p.is_symlink()]
    if links:  # a link would export whatever it points at (or an absolute link into the archive)
        raise RagdTrainError(
            f"{links[0]}: symlinks in a model directory are not exported; replace it by a file"
        )
    from ragd_train.weights import verify_weights

    verify_weights(src)  # a model with unloadable or non-finite weights is not exported
    inside = dest.resolve()
    if inside == src.resolve() or src.resolve() in inside.parents:
        raise RagdTrainError(f"{dest} is inside the model's own folder {src}: export it elsewhere")
    if fmt == "ollama":
        from ragd_train.llm.export import export_ollama

        return export_ollama(src, dest)
    if fmt == "hf":
        if os.path.lexists(dest):
            raise RagdTrainError(f"{dest} already exists")
        import tempfile

        check_output_path(dest)  # its folder must be a folder
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagdTrainError(f"{dest}: cannot be written ({exc.strerror})") from None
        # a fresh staging name: never a folder of the user's that happens to be called .NAME.tmp
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)) / "m"
        try:
            shutil.copytree(src, staging, ignore=lambda d, names: [n for n in names if n in HF_FILES_SKIP])
            os.chmod(staging, created_mode(directory=True))
            staging.rename(dest)
        finally:
            shutil.rmtree(staging.parent, ignore_errors=True)
        return dest
    if fmt != "tar":
        raise RagdTrainError(f"unknown export format '{fmt}' (tar, hf or ollama)")
    if dest.is_dir() or not dest.name.endswith((".tar.gz", ".tgz")):
        dest = dest / f"{name}.tar.gz"
    files = [(f, f"{name}/{f.relative_to(src)}") for f in sorted(src.rglob("*")) if f.is_file()]
    for suffix in (".json", ".md", ".png"):
        report = workspace / "reports" / f"{name}{suffix}"
        if report.exists():
            files.append((report, f"{name}/report/{report.name}"))
    if os.path.lexists(dest):
        raise RagdTrainError(f"{dest} already exists: delete it or export --to another name")
    manifest = json.dumps(_manifest(files), indent=2).encode()
    import io

    # atomic, a regular file or a new path only, never over one that appeared meanwhile
    with atomic_open(dest, "wb", replace=False) as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
        for path, arcname in files:
            tar.add(path, arcname=arcname, recursive=False)
        info = tarfile.TarInfo(f"{name}/MANIFEST.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return dest
