"""ragd's own config (``~/.ragd/config.yaml``): read it, switch ragd to a model, say how to re-index.

With ragd importable, every read and write goes through ragd's own pydantic model
(``ragd.config.RagdConfig``), so no key ragd ignores is ever written. Without ragd, the file is
edited in place with its comments kept, and only the keys ragd 1.0.10 reads for models are accepted.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path
from typing import Any

from ragd_train.errors import InputError, RagdTrainError

log = logging.getLogger("ragd_train")

# ragd 1.0.10's defaults (ragd/config.py) for the settings ragd-train reads or writes.
RAGD_DEFAULTS: dict[str, Any] = {
    "embedding.model": "all-MiniLM-L6-v2",
    "embedding.dimension": 384,
    "llm.model": "llama3.2:3b",
    "llm.base_url": "http://localhost:11434",
}
# What `ragd train use` may write without ragd installed (the keys ragd 1.0.10 reads for models).
KNOWN_KEYS = tuple(RAGD_DEFAULTS)


def ragd_installed() -> bool:
    try:
        import ragd.config  # noqa: F401
    except ImportError:
        return False
    return True


def ragd_config_path() -> Path:
    """Where ragd 1.0.10 keeps its config: ``$HOME/.ragd/config.yaml`` (it has no override)."""
    return Path.home() / ".ragd" / "config.yaml"


def _read_yaml(path: Path) -> dict[str, Any]:
    from ragd_train.yaml_io import read_yaml_mapping

    return read_yaml_mapping(path)


def _dig(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_ragd_settings(path: Path | None = None) -> dict[str, Any]:
    """The model settings ragd itself uses (its defaults where the file is silent). Never writes."""
    path = path or ragd_config_path()
    values = dict(RAGD_DEFAULTS)
    if not path.is_file():
        return values
    data = _read_yaml(path)
    if ragd_installed():
        from pydantic import ValidationError
        from ragd.config import RagdConfig

        try:
            cfg = RagdConfig.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise InputError(f"ragd rejects this config: {err['msg']}", path=path, field=field) from None
        return {
            "embedding.model": cfg.embedding.model,
            "embedding.dimension": cfg.embedding.dimension,
            "llm.model": cfg.llm.model,
            "llm.base_url": cfg.llm.base_url,
        }
    for key in KNOWN_KEYS:
        value = _dig(data, key)
        if value is not None:
            values[key] = value
    return values


def ollama_settings(ollama: dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """``ollama:`` with ``host``/``model`` taken from ragd's ``llm.base_url``/``llm.model`` when unset."""
    if ollama.get("host") and ollama.get("model"):
        return ollama
    ragd = read_ragd_settings(path)
    return {
        **ollama,
        "host": ollama.get("host") or ragd["llm.base_url"],
        "model": ollama.get("model") or ragd["llm.model"],
    }


def set_values(updates: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``updates`` (dotted keys) into ragd's config; return the file written."""
    path = path or ragd_config_path()
    unknown = sorted(k for k in updates if k not in KNOWN_KEYS)
    if unknown:
        raise InputError(
            f"ragd-train does not write '{unknown[0]}' (known: {', '.join(KNOWN_KEYS)})", path=path
        )
    if path.exists() and not path.is_file():
        raise InputError("ragd config is not a regular file", path=path)
    if ragd_installed():
        _set_with_ragd(path, updates)
    else:
        _set_in_place(path, updates)
    return path


def _set_with_ragd(path: Path, updates: dict[str, Any]) -> None:
    """Load, change and save through ragd's own config model (ragd's save keeps mode and symlinks)."""
    from pydantic import ValidationError
    from ragd.config import RagdConfig, _config_to_dict, create_default_config, save_config

    data = _read_yaml(path) if path.is_file() else _config_to_dict(create_default_config())
    for dotted, value in updates.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    try:
        cfg = RagdConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(
            f"ragd rejects this value: {err['msg']}", path=path, field=".".join(map(str, err["loc"]))
        ) from None
    save_config(cfg, path)


def _set_in_place(path: Path, updates: dict[str, Any]) -> None:
    """Edit the YAML file keeping its comments, mode and symlink (ragd is not installed)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    from ragd_train.jsonl_io import atomic_open

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    target = path.resolve() if path.is_symlink() else path
    _read_yaml(target) if target.is_file() else None  # one-line errors for bad files first
    data = yaml.load(target.read_text(encoding="utf-8")) if target.is_file() else None
    data = data if data is not None else CommentedMap()
    for dotted, value in updates.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            if part in node and not hasattr(node[part], "keys"):
                raise InputError(f"'{part}' is a {type(node[part]).__name__}, not a section", path=path)
            node = node.setdefault(part, CommentedMap())
        node[leaf] = value
    mode = target.stat().st_mode & 0o777 if target.exists() else None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target) as handle:
        yaml.dump(data, handle)
    if mode is not None:
        os.chmod(target, mode)


# --------------------------------------------------------------------------- re-indexing


def index_folders(snapshot: str | Path | None, source_path: str | None) -> list[str]:
    """The folders to give ``ragd index``: where the snapshot's files live, else the corpus folder."""
    folders: set[str] = set()
    snapshot = Path(snapshot) if snapshot is not None else None
    if snapshot is not None and snapshot.is_file():
        from ragd_train.jsonl_io import read_jsonl

        for chunk in read_jsonl(snapshot):
            source = str(chunk.get("source") or "")
            if os.path.isabs(source):
                folders.add(str(Path(source).parent))
    if not folders and source_path:
        folders.add(str(Path(source_path).expanduser().resolve()))
    return sorted(folders)


def switch_commands(model_dir: Path, dimension: int, folders: list[str]) -> list[str]:
    """ragd 1.0.10 commands that switch ragd to ``model_dir`` and re-embed every chunk with it.

    ``ragd reindex`` does not re-embed in 1.0.10, and ``ragd models set --embedding`` leaves
    ``embedding.dimension`` alone; ``ragd index --overwrite`` deletes each document's chunks (and
    BM25 rows) and embeds them again with the configured model. A new dimension cannot share the
    Chroma collection with the old vectors, so then the old index is moved aside first.
    """
    model = shlex.quote(str(model_dir.resolve()))
    current = read_ragd_settings()
    commands = []
    if int(current["embedding.dimension"]) == int(dimension):
        commands.append(f"ragd models set --embedding {model} --no-validate")
    else:
        chroma = Path.home() / ".ragd" / "chroma"
        commands.append(f"ragd-train use {model}")
        commands.append(
            f"mv {shlex.quote(str(chroma))} {shlex.quote(str(chroma))}.dim{current['embedding.dimension']}"
        )
    for folder in folders or ["<each folder you indexed>"]:
        commands.append(f"ragd index {shlex.quote(folder)} --overwrite")
    return commands


def switch_message(model_dir: Path, dimension: int, folders: list[str]) -> str:
    lines = ["Switch ragd to this model and re-embed its index (ragd 1.0.10 commands):"]
    lines += [f"  {c}" for c in switch_commands(model_dir, dimension, folders)]
    if not ragd_installed():
        lines.append("(ragd is not installed here: run them where ragd is.)")
    return "\n".join(lines)


def require_model_dir(model_dir: Path) -> int:
    """The output dimension of a fine-tuned embedding model directory (one-line error otherwise)."""
    from ragd_train.metadata import metadata_path, read_metadata

    if not (model_dir / "modules.json").is_file():
        raise RagdTrainError(f"{model_dir} is not a sentence-transformers model directory")
    dimension = read_metadata(model_dir, partial=True).output_dimension
    if dimension is None:
        raise InputError("is missing", path=metadata_path(model_dir), field="output_dimension")
    return dimension


FALLBACK_BASE = "llama3.2:3b"  # ragd 1.0.10's own default llm.model


def default_base_model() -> str:
    """``llm.base_model`` when unset: ragd's ``llm.model`` (the model the user chats with), read from
    ragd's config; ``llama3.2:3b`` (ragd's default) without one."""
    try:
        return str(read_ragd_settings()["llm.model"] or FALLBACK_BASE)
    except InputError as exc:
        log.warning("llm.base_model: ragd's config is unreadable (%s); using %s", exc, FALLBACK_BASE)
        return FALLBACK_BASE
