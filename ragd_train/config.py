"""Workflow configuration: load, merge, validate against config/schema.yaml, fill defaults."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ragd_train.errors import InputError
from ragd_train.errors import resolved as resolved_path
from ragd_train.yaml_io import read_yaml_mapping


def workflow_dir() -> Path:
    """The directory that holds the Snakefile, rules/ and config/."""
    override = os.environ.get("RAGD_TRAIN_WORKFLOW")
    return Path(override) if override else Path(__file__).resolve().parents[1]


def schema_path() -> Path:
    return workflow_dir() / "config" / "schema.yaml"


def default_config_path() -> Path:
    return workflow_dir() / "config" / "config.yaml"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``, recursing into mappings (as Snakemake does)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _line_of(path: Path, keys: list[str | int]) -> int | None:
    """Line (1-based) of the YAML node at ``keys`` in ``path``, or None."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def has_path(mapping: Mapping[str, Any] | None, keys: list[str | int]) -> bool:
    node: Any = mapping
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _get_path(mapping: Any, keys: list[str | int]) -> Any:
    for key in keys:
        mapping = mapping[key]
    return mapping


def _check_url(url: Any, path: Path, field: str) -> None:
    """An http(s) URL with a host, else a one-line error naming ``path``'s line and ``field``."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(url))
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        ok = False
    if ok:
        return
    keys: list[str | int] = list(field.split("."))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        data = {}
    where, line = locate(data, keys, [path]) if has_path(data or {}, keys) else (str(path), None)
    raise InputError(
        f"not an http(s) URL: {url!r} (ragd's Ollama server; ragd-train uses it unless ollama.host is set)",
        path=where,
        line=line,
        field=field,
    )


def _non_finite(node: Any, keys: tuple[Any, ...] = ()) -> tuple[list[Any], float] | None:
    """The path and value of the first NaN or infinity in a config, if any."""
    if isinstance(node, float) and not math.isfinite(node):
        return list(keys), node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _non_finite(value, (*keys, key))
        if found is not None:
            return found
    return None


def validate_config(
    config: dict[str, Any],
    sources: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Validate ``config`` in place, filling defaults; raise a one-line InputError on failure.

    ``sources`` are the YAML files the config came from, used to name the file and line. Settings
    under their old names are moved to the new ones first (one deprecation line each, unless
    ``quiet``).
    """
    from ragd_train.settings import migrate

    sources = list(sources)
    original = copy.deepcopy(config)
    moved = {
        new: old.split(".")
        for old, new in migrate(config, lambda keys: locate(config, keys, sources), quiet=quiet).items()
    }
    bad = _non_finite(config)
    if bad is not None:  # NaN passes every JSON-schema bound (it compares false); inf trains NaN
        keys, value = bad
        field = ".".join(str(k) for k in keys)
        if overrides and has_path(overrides, keys):
            raise InputError(
                f"invalid value: {value} is not a finite number", path="command line", field=field
            )
        where, line = locate(config, keys, sources)
        raise InputError(f"invalid value: {value} is not a finite number", path=where, line=line, field=field)
    schema = yaml.safe_load(schema_path().read_text(encoding="utf-8"))
    validator = _validator()(schema)
    error = next(iter(sorted(validator.iter_errors(config), key=lambda e: list(e.path))), None)
    if error is None:
        _check_cross_fields(config, sources)
        if isinstance(config.get("ollama"), dict):
            from ragd_train.ragd.config import ollama_settings, ragd_config_path

            from_ragd = not config["ollama"].get("host")
            config["ollama"] = ollama_settings(config["ollama"])  # one LLM setting: ragd's
            if from_ragd:  # a bad URL is ragd's setting: named in ragd's file, not as ollama.host
                _check_url(config["ollama"]["host"], ragd_config_path(), "llm.base_url")
        llm = config.get("llm")
        if isinstance(llm, dict) and not llm.get("base_model"):
            from ragd_train.ragd.config import default_base_model

            llm["base_model"] = default_base_model()  # the model the user chats with: ragd's llm.model
        return config
    keys = list(error.path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            keys.append(extra[0])
    if "propertyNames" in error.schema_path and isinstance(error.instance, str):
        keys.append(error.instance)  # a bad key: name its own line, not its parent's
    field = ".".join(str(k) for k in keys) or "<root>"
    if overrides and has_path(overrides, keys):
        raise InputError(f"invalid value: {error.message}", path="command line", field=field)
    old = moved.get(".".join(str(k) for k in keys[:2]))
    if old:  # set under its deprecated name: point at that line
        where, line = locate(original, [*old, *keys[2:]], sources)
    else:
        where, line = locate(config, keys, sources)
    raise InputError(f"invalid config value: {error.message}", path=where, line=line, field=field)


def locate(
    config: Mapping[str, Any], keys: list[str | int], sources: Iterable[str | Path]
) -> tuple[str, int | None]:
    """The file (and line) that set the value at ``keys``: the last of ``sources`` holding the
    value the merged ``config`` has, else the last that sets the key; ``config`` when none does."""
    current = _get_path(config, keys)
    having: list[tuple[Path, Any]] = []
    for src in [Path(s) for s in sources]:
        try:
            data = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if has_path(data, keys):
            having.append((src, _get_path(data, keys)))
    match = next((src for src, value in reversed(having) if value == current), None)
    if match is None and having:
        match = having[-1][0]
    if match is None:
        return "config", None
    return str(match), _line_of(match, keys)


def _check_cross_fields(config: dict[str, Any], sources: Iterable[str | Path] = ()) -> None:
    for name, corpus in config.get("corpora", {}).items():
        if corpus.get("chunk_overlap", 0) >= corpus.get("chunk_size", 800):
            keys: list[str | int] = ["corpora", name, "chunk_overlap"]
            where, line = locate(config, keys, sources)
            raise InputError(
                f"chunk_overlap {corpus.get('chunk_overlap', 0)} must be smaller than chunk_size "
                f"{corpus.get('chunk_size', 800)}",
                path=where,
                line=line,
                field=f"corpora.{name}.chunk_overlap",
            )


def load_config(
    extra_files: Iterable[str | Path] = (),
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Load the default config, merge ``extra_files`` and ``overrides`` over it, validate it."""
    files = [default_config_path(), *[Path(f) for f in extra_files]]
    config: dict[str, Any] = {}
    for file in files:
        config = deep_merge(config, read_yaml_mapping(file, empty_ok=False))
    if overrides:
        config = deep_merge(config, overrides)
    return validate_config(config, files, overrides, quiet)


def resolve_corpus(cfg: Mapping[str, Any], base_dirs: Iterable[str | Path]) -> dict[str, Any]:
    """Copy of a corpus config whose relative ``path`` (and ``questions``) are made absolute.

    A relative path is looked up in the working directory (the workspace) first, then in
    each of ``base_dirs`` (the workflow directory, for the shipped demo corpus).
    """
    resolved = dict(cfg)
    bases = [Path.cwd(), *[Path(b) for b in base_dirs]]
    for key in ("path", "questions", "chat_history"):
        if key not in cfg:
            continue
        path = Path(str(cfg[key])).expanduser()
        if not path.is_absolute():
            for base in bases:
                if (base / path).exists():
                    path = base / path
                    break
        resolved[key] = str(resolved_path(path, field=key))
    return resolved
